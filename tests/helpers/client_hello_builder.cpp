#include "tests/helpers/client_hello_builder.h"

#include <algorithm>
#include <stdexcept>

#include "tls_hello.h"

namespace edgepin::test {
namespace {

namespace ext = edgepin::tls::extension_type;

// Extensions block and trailing bytes, shared by both hellos.
void put_extensions(Bytes& body, bool block, std::optional<uint16_t> block_len,
                    const std::vector<RawExtension>& extensions, HelloLayout* layout,
                    size_t body_offset) {
  if (!block) return;
  Bytes exts;
  for (const auto& e : extensions) {
    if (layout) layout->extension_starts.push_back(body_offset + body.size() + 2 + exts.size());
    put_u16(exts, e.type);
    put_u16(exts, e.length_override.value_or(static_cast<uint16_t>(e.data.size())));
    put_bytes(exts, e.data);
  }
  if (layout) layout->extensions_length = body_offset + body.size();
  put_u16(body, block_len.value_or(static_cast<uint16_t>(exts.size())));
  put_bytes(body, exts);
}

template <typename Builder>
Bytes finish_message(const Builder& b, Bytes body, HelloLayout* layout) {
  put_bytes(body, b.trailing);
  Bytes msg = handshake_message(b.handshake_type, body, b.handshake_length);
  if (layout) layout->end = msg.size();
  return msg;
}

// A recognisable, non-zero random so tests can spot it in dumps.
std::array<uint8_t, 32> pattern_random(uint8_t seed) {
  std::array<uint8_t, 32> r{};
  for (size_t i = 0; i < r.size(); ++i) r[i] = static_cast<uint8_t>(seed + i * 7);
  return r;
}

}  // namespace

void put_u8(Bytes& out, uint32_t v) { out.push_back(static_cast<uint8_t>(v)); }
void put_u16(Bytes& out, uint32_t v) {
  out.push_back(static_cast<uint8_t>(v >> 8));
  out.push_back(static_cast<uint8_t>(v));
}
void put_u24(Bytes& out, uint32_t v) {
  out.push_back(static_cast<uint8_t>(v >> 16));
  put_u16(out, v);
}
void put_u32(Bytes& out, uint32_t v) {
  put_u16(out, v >> 16);
  put_u16(out, v);
}
void put_bytes(Bytes& out, std::span<const uint8_t> b) {
  out.insert(out.end(), b.begin(), b.end());
}
Bytes to_bytes(std::string_view s) { return Bytes(s.begin(), s.end()); }

Bytes handshake_message(uint8_t type, std::span<const uint8_t> body,
                        std::optional<uint32_t> length_override) {
  Bytes m;
  put_u8(m, type);
  put_u24(m, length_override.value_or(static_cast<uint32_t>(body.size())));
  put_bytes(m, body);
  return m;
}

Bytes make_records(uint8_t content_type, uint16_t record_version, std::span<const uint8_t> payload,
                   const std::vector<size_t>& fragment_sizes) {
  if (fragment_sizes.empty() ||
      std::find(fragment_sizes.begin(), fragment_sizes.end(), 0) != fragment_sizes.end())
    throw std::invalid_argument("make_records: fragment sizes must be non-empty and positive");
  Bytes out;
  size_t pos = 0;
  for (size_t k = 0; pos < payload.size(); ++k) {
    size_t n =
        std::min(fragment_sizes[std::min(k, fragment_sizes.size() - 1)], payload.size() - pos);
    Bytes r =
        raw_record(content_type, record_version, static_cast<uint32_t>(n), payload.subspan(pos, n));
    put_bytes(out, r);
    pos += n;
  }
  return out;
}

Bytes raw_record(uint8_t content_type, uint16_t record_version, uint32_t length,
                 std::span<const uint8_t> payload) {
  Bytes r;
  put_u8(r, content_type);
  put_u16(r, record_version);
  put_u16(r, length);
  put_bytes(r, payload);
  return r;
}

Bytes change_cipher_spec_record(uint16_t record_version) {
  const uint8_t one = 1;
  return raw_record(20, record_version, 1, std::span(&one, 1));
}

Bytes alert_record(uint8_t level, uint8_t description, uint16_t record_version) {
  const uint8_t body[] = {level, description};
  return raw_record(21, record_version, 2, body);
}

Bytes sni_extension_data(std::string_view host) {
  Bytes entry;
  put_u8(entry, 0);  // host_name
  put_u16(entry, static_cast<uint32_t>(host.size()));
  put_bytes(entry, to_bytes(host));
  Bytes d;
  put_u16(d, static_cast<uint32_t>(entry.size()));
  put_bytes(d, entry);
  return d;
}

Bytes alpn_extension_data(const std::vector<std::string>& protocols) {
  Bytes list;
  for (const auto& p : protocols) {
    put_u8(list, static_cast<uint32_t>(p.size()));
    put_bytes(list, to_bytes(p));
  }
  Bytes d;
  put_u16(d, static_cast<uint32_t>(list.size()));
  put_bytes(d, list);
  return d;
}

Bytes client_versions_extension_data(const std::vector<uint16_t>& versions) {
  Bytes d;
  put_u8(d, static_cast<uint32_t>(versions.size() * 2));
  for (uint16_t v : versions) put_u16(d, v);
  return d;
}

Bytes psk_extension_data(const std::vector<TestPskIdentity>& identities,
                         std::optional<std::vector<size_t>> binder_sizes) {
  Bytes ids;
  for (const auto& id : identities) {
    put_u16(ids, static_cast<uint32_t>(id.identity.size()));
    put_bytes(ids, id.identity);
    put_u32(ids, id.obfuscated_ticket_age);
  }
  std::vector<size_t> sizes = binder_sizes.value_or(std::vector<size_t>(identities.size(), 32));
  Bytes binders;
  for (size_t k = 0; k < sizes.size(); ++k) {
    put_u8(binders, static_cast<uint32_t>(sizes[k]));
    binders.insert(binders.end(), sizes[k], static_cast<uint8_t>(0xB0 + k));
  }
  Bytes d;
  put_u16(d, static_cast<uint32_t>(ids.size()));
  put_bytes(d, ids);
  put_u16(d, static_cast<uint32_t>(binders.size()));
  put_bytes(d, binders);
  return d;
}

// ---------------------------------------------------------------- ClientHelloBuilder

ClientHelloBuilder::ClientHelloBuilder() : random(pattern_random(0x11)) {}

ClientHelloBuilder& ClientHelloBuilder::add_extension(uint16_t type, Bytes data) {
  extensions.push_back(RawExtension{type, std::move(data), std::nullopt});
  return *this;
}

ClientHelloBuilder& ClientHelloBuilder::sni(std::string_view host) {
  return add_extension(ext::kServerName, sni_extension_data(host));
}

ClientHelloBuilder& ClientHelloBuilder::alpn(const std::vector<std::string>& protocols) {
  return add_extension(ext::kAlpn, alpn_extension_data(protocols));
}

ClientHelloBuilder& ClientHelloBuilder::supported_versions(const std::vector<uint16_t>& versions) {
  return add_extension(ext::kSupportedVersions, client_versions_extension_data(versions));
}

ClientHelloBuilder& ClientHelloBuilder::supported_groups(const std::vector<uint16_t>& groups) {
  Bytes d;
  put_u16(d, static_cast<uint32_t>(groups.size() * 2));
  for (uint16_t g : groups) put_u16(d, g);
  return add_extension(ext::kSupportedGroups, std::move(d));
}

ClientHelloBuilder& ClientHelloBuilder::key_share_x25519() {
  constexpr uint16_t kX25519 = 0x001D;
  Bytes share;
  put_u16(share, kX25519);
  put_u16(share, 32);
  for (uint8_t i = 0; i < 32; ++i) put_u8(share, 0x40 + i);
  Bytes d;
  put_u16(d, static_cast<uint32_t>(share.size()));
  put_bytes(d, share);
  return add_extension(ext::kKeyShare, std::move(d));
}

ClientHelloBuilder& ClientHelloBuilder::session_ticket(Bytes ticket) {
  return add_extension(ext::kSessionTicket, std::move(ticket));
}

ClientHelloBuilder& ClientHelloBuilder::psk_modes(Bytes modes) {
  Bytes d;
  put_u8(d, static_cast<uint32_t>(modes.size()));
  put_bytes(d, modes);
  return add_extension(ext::kPskKeyExchangeModes, std::move(d));
}

ClientHelloBuilder& ClientHelloBuilder::early_data() { return add_extension(ext::kEarlyData, {}); }

ClientHelloBuilder& ClientHelloBuilder::pre_shared_key(
    const std::vector<TestPskIdentity>& identities) {
  return add_extension(ext::kPreSharedKey, psk_extension_data(identities));
}

ClientHelloBuilder& ClientHelloBuilder::typical_tls13(std::string_view host) {
  session_id.assign(32, 0x5A);
  sni(host);
  alpn({"h2", "http/1.1"});
  supported_groups({0x001D, 0x0017});
  key_share_x25519();
  supported_versions({0x0304, 0x0303});
  psk_modes({1});
  return *this;
}

Bytes ClientHelloBuilder::message(HelloLayout* layout) const {
  if (layout) *layout = HelloLayout{};
  // Body offsets are message offsets minus the 4-byte handshake header.
  constexpr size_t kHdr = 4;
  Bytes body;
  if (layout) layout->legacy_version = kHdr + body.size();
  put_u16(body, legacy_version);
  put_bytes(body, random);
  if (layout) layout->session_id_length = kHdr + body.size();
  put_u8(body, session_id_length.value_or(static_cast<uint8_t>(session_id.size())));
  put_bytes(body, session_id);
  if (layout) layout->cipher_suites_length = kHdr + body.size();
  put_u16(body, cipher_suites_length.value_or(static_cast<uint16_t>(cipher_suites.size() * 2)));
  for (uint16_t cs : cipher_suites) put_u16(body, cs);
  if (layout) layout->compression_length = kHdr + body.size();
  put_u8(body, compression_length.value_or(static_cast<uint8_t>(compression_methods.size())));
  put_bytes(body, compression_methods);
  put_extensions(body, extensions_block, extensions_length, extensions, layout, kHdr);
  return finish_message(*this, std::move(body), layout);
}

Bytes ClientHelloBuilder::records(const std::vector<size_t>& fragment_sizes,
                                  uint16_t record_version) const {
  return make_records(22, record_version, message(), fragment_sizes);
}

// ---------------------------------------------------------------- ServerHelloBuilder

ServerHelloBuilder::ServerHelloBuilder() : random(pattern_random(0x77)) {}

ServerHelloBuilder& ServerHelloBuilder::add_extension(uint16_t type, Bytes data) {
  extensions.push_back(RawExtension{type, std::move(data), std::nullopt});
  return *this;
}

ServerHelloBuilder& ServerHelloBuilder::selected_version(uint16_t version) {
  Bytes d;
  put_u16(d, version);
  return add_extension(ext::kSupportedVersions, std::move(d));
}

ServerHelloBuilder& ServerHelloBuilder::session_ticket_ack() {
  return add_extension(ext::kSessionTicket, {});
}

ServerHelloBuilder& ServerHelloBuilder::alpn(std::string_view protocol) {
  return add_extension(ext::kAlpn, alpn_extension_data({std::string(protocol)}));
}

ServerHelloBuilder& ServerHelloBuilder::hello_retry_request() {
  random = edgepin::tls::kHelloRetryRequestRandom;
  legacy_version = 0x0303;
  cipher_suite = 0x1301;
  return selected_version(0x0304);
}

Bytes ServerHelloBuilder::message(HelloLayout* layout) const {
  if (layout) *layout = HelloLayout{};
  constexpr size_t kHdr = 4;
  Bytes body;
  if (layout) layout->legacy_version = kHdr;
  put_u16(body, legacy_version);
  put_bytes(body, random);
  if (layout) layout->session_id_length = kHdr + body.size();
  put_u8(body, session_id_length.value_or(static_cast<uint8_t>(session_id.size())));
  put_bytes(body, session_id);
  put_u16(body, cipher_suite);
  put_u8(body, compression_method);
  put_extensions(body, extensions_block, extensions_length, extensions, layout, kHdr);
  return finish_message(*this, std::move(body), layout);
}

Bytes ServerHelloBuilder::records(const std::vector<size_t>& fragment_sizes,
                                  uint16_t record_version) const {
  return make_records(22, record_version, message(), fragment_sizes);
}

Bytes new_session_ticket_message(uint32_t lifetime_hint, std::span<const uint8_t> ticket) {
  Bytes body;
  put_u32(body, lifetime_hint);
  put_u16(body, static_cast<uint32_t>(ticket.size()));
  put_bytes(body, ticket);
  return handshake_message(4, body);
}

}  // namespace edgepin::test
