#include "tls_hello.h"

#include <algorithm>
#include <bitset>

namespace edgepin::tls {
namespace {

// A read cursor over [pos, end) of one handshake message. Offsets are
// message offsets so that errors point at the byte on the wire. Every read
// checks the end first and leaves the cursor unchanged on failure.
class Cursor {
 public:
  Cursor(std::span<const uint8_t> message, size_t pos, size_t end)
      : data_(message), pos_(pos), end_(end) {}

  size_t offset() const { return pos_; }
  size_t remaining() const { return end_ - pos_; }
  bool empty() const { return pos_ == end_; }

  bool u8(uint8_t& v) {
    if (remaining() < 1) return false;
    v = data_[pos_++];
    return true;
  }
  bool u16(uint16_t& v) {
    if (remaining() < 2) return false;
    v = static_cast<uint16_t>(data_[pos_] << 8 | data_[pos_ + 1]);
    pos_ += 2;
    return true;
  }
  bool u32(uint32_t& v) {
    if (remaining() < 4) return false;
    v = static_cast<uint32_t>(data_[pos_]) << 24 | static_cast<uint32_t>(data_[pos_ + 1]) << 16 |
        static_cast<uint32_t>(data_[pos_ + 2]) << 8 | data_[pos_ + 3];
    pos_ += 4;
    return true;
  }
  bool bytes(size_t n, std::span<const uint8_t>& out) {
    if (remaining() < n) return false;
    out = data_.subspan(pos_, n);
    pos_ += n;
    return true;
  }
  // A cursor over the next n bytes (n <= remaining()), which this one skips.
  Cursor take(size_t n) {
    Cursor sub(data_, pos_, pos_ + n);
    pos_ += n;
    return sub;
  }

 private:
  std::span<const uint8_t> data_;
  size_t pos_;
  size_t end_;
};

// An error found in a message, at a message offset.
struct Failure {
  HelloError error = HelloError::None;
  size_t offset = 0;
  explicit operator bool() const { return error != HelloError::None; }
};

constexpr Failure ok() { return {}; }
constexpr Failure fail_at(HelloError e, size_t offset) { return {e, offset}; }

// Offset reported for a message too short for a fixed-size field: its
// 24-bit length field, which is what claimed too little.
constexpr size_t kHandshakeLengthOffset = 1;

constexpr bool is_tls_major(uint16_t version) { return (version >> 8) == 3; }

std::vector<uint8_t> to_vector(std::span<const uint8_t> s) { return {s.begin(), s.end()}; }

// The fields every hello starts with, up to the extensions block.
struct HelloPrefix {
  uint16_t legacy_version = 0;
  std::array<uint8_t, kRandomBytes> random{};
  std::vector<uint8_t> session_id;
};

Failure read_prefix(Cursor& c, HelloPrefix& out) {
  size_t at = c.offset();
  if (!c.u16(out.legacy_version)) return fail_at(HelloError::TruncatedBody, kHandshakeLengthOffset);
  if (!is_tls_major(out.legacy_version)) return fail_at(HelloError::BadLegacyVersion, at);
  std::span<const uint8_t> random;
  if (!c.bytes(kRandomBytes, random))
    return fail_at(HelloError::TruncatedBody, kHandshakeLengthOffset);
  std::copy(random.begin(), random.end(), out.random.begin());
  at = c.offset();
  uint8_t sid_len = 0;
  if (!c.u8(sid_len)) return fail_at(HelloError::TruncatedBody, kHandshakeLengthOffset);
  std::span<const uint8_t> sid;
  if (sid_len > kMaxSessionIdBytes || !c.bytes(sid_len, sid))
    return fail_at(HelloError::BadSessionIdLength, at);
  out.session_id = to_vector(sid);
  return ok();
}

// The extensions block: absent (the message ends here), or a 2-byte length
// that must cover exactly the rest of the message. Calls visit(type, data)
// for each extension after the framing checks. pre_shared_key must be the
// last extension (RFC 8446 4.2.11); a ServerHello never has one after it
// either, so the rule holds for both hellos.
template <typename Visit>
Failure read_extensions(Cursor& c, bool& has_block, std::vector<Extension>& out, Visit&& visit) {
  has_block = false;
  if (c.empty()) return ok();
  has_block = true;
  size_t at = c.offset();
  uint16_t block_len = 0;
  if (!c.u16(block_len) || block_len != c.remaining())
    return fail_at(HelloError::BadExtensionsLength, at);
  Cursor block = c.take(block_len);
  // 8 KiB on the stack; a linear search over up to 16383 extensions would
  // be quadratic on hostile input.
  std::bitset<65536> seen;
  bool psk_seen = false;
  while (!block.empty()) {
    at = block.offset();
    if (psk_seen) return fail_at(HelloError::PskNotLast, at);
    uint16_t type = 0;
    uint16_t len = 0;
    if (!block.u16(type) || !block.u16(len)) return fail_at(HelloError::ExtensionOverrun, at);
    if (len > block.remaining()) return fail_at(HelloError::ExtensionOverrun, at + 2);
    if (seen.test(type)) return fail_at(HelloError::DuplicateExtension, at);
    seen.set(type);
    psk_seen = type == extension_type::kPreSharedKey;
    out.push_back(Extension{type, static_cast<uint32_t>(block.offset()), len});
    Cursor data = block.take(len);
    if (Failure f = visit(type, data)) return f;
  }
  return ok();
}

// RFC 6066 3. OpenSSL and most servers only use the host_name entry; other
// name types are skipped with the 2-byte length every deployed one uses.
Failure decode_sni(Cursor d, std::optional<std::string>& out) {
  size_t at = d.offset();
  uint16_t list_len = 0;
  if (!d.u16(list_len) || list_len == 0 || list_len != d.remaining())
    return fail_at(HelloError::BadSni, at);
  while (!d.empty()) {
    at = d.offset();
    uint8_t name_type = 0;
    uint16_t name_len = 0;
    std::span<const uint8_t> name;
    if (!d.u8(name_type) || !d.u16(name_len) || !d.bytes(name_len, name))
      return fail_at(HelloError::BadSni, at);
    if (name_type != 0) continue;
    // "MUST NOT contain more than one name of the same name_type".
    if (out || name.empty() || name.size() > kMaxHostNameBytes)
      return fail_at(HelloError::BadSni, at);
    auto nul = std::find(name.begin(), name.end(), uint8_t{0});
    if (nul != name.end()) return fail_at(HelloError::BadSni, at + 3 + (nul - name.begin()));
    out.emplace(name.begin(), name.end());
  }
  return ok();
}

// RFC 7301 3.1: a non-empty list of non-empty protocol names.
Failure decode_alpn(Cursor d, std::vector<std::string>& out) {
  size_t at = d.offset();
  uint16_t list_len = 0;
  if (!d.u16(list_len) || list_len < 2 || list_len != d.remaining())
    return fail_at(HelloError::BadAlpn, at);
  while (!d.empty()) {
    at = d.offset();
    uint8_t len = 0;
    std::span<const uint8_t> name;
    if (!d.u8(len) || len == 0 || !d.bytes(len, name)) return fail_at(HelloError::BadAlpn, at);
    out.emplace_back(name.begin(), name.end());
  }
  return ok();
}

// RFC 8446 4.2.1 (ClientHello form): 1-byte length, 2..254 bytes, even.
Failure decode_client_versions(Cursor d, std::vector<uint16_t>& out) {
  size_t at = d.offset();
  uint8_t len = 0;
  if (!d.u8(len) || len < 2 || len % 2 != 0 || len != d.remaining())
    return fail_at(HelloError::BadSupportedVersions, at);
  while (!d.empty()) {
    uint16_t v = 0;
    d.u16(v);  // cannot fail: even length checked above
    out.push_back(v);
  }
  return ok();
}

// RFC 8446 4.2.11: identities<7..2^16-1>, binders<33..2^16-1>, one binder
// per identity, and nothing after.
Failure decode_psk(Cursor d, std::vector<PskIdentity>& out) {
  size_t at = d.offset();
  uint16_t ids_len = 0;
  if (!d.u16(ids_len) || ids_len < 7 || ids_len > d.remaining())
    return fail_at(HelloError::BadPskIdentities, at);
  Cursor ids = d.take(ids_len);
  while (!ids.empty()) {
    at = ids.offset();
    uint16_t len = 0;
    std::span<const uint8_t> identity;
    PskIdentity psk;
    if (!ids.u16(len) || len == 0 || !ids.bytes(len, identity) ||
        !ids.u32(psk.obfuscated_ticket_age))
      return fail_at(HelloError::BadPskIdentities, at);
    psk.identity = to_vector(identity);
    out.push_back(std::move(psk));
  }
  at = d.offset();
  uint16_t binders_len = 0;
  if (!d.u16(binders_len) || binders_len < kMinPskBinderBytes + 1 || binders_len != d.remaining())
    return fail_at(HelloError::BadPskBinders, at);
  size_t binders = 0;
  while (!d.empty()) {
    at = d.offset();
    uint8_t len = 0;
    std::span<const uint8_t> binder;
    if (!d.u8(len) || len < kMinPskBinderBytes || !d.bytes(len, binder))
      return fail_at(HelloError::BadPskBinders, at);
    ++binders;
  }
  if (binders != out.size()) return fail_at(HelloError::BadPskBinders, at);
  return ok();
}

// RFC 8446 4.2.9: ke_modes<1..255>.
Failure decode_psk_modes(Cursor d, std::vector<uint8_t>& out) {
  size_t at = d.offset();
  uint8_t len = 0;
  std::span<const uint8_t> modes;
  if (!d.u8(len) || len == 0 || len != d.remaining() || !d.bytes(len, modes))
    return fail_at(HelloError::BadPskModes, at);
  out = to_vector(modes);
  return ok();
}

Failure parse_client_hello(std::span<const uint8_t> msg, ClientHello& h) {
  Cursor c(msg, kHandshakeHeaderBytes, msg.size());
  HelloPrefix prefix;
  if (Failure f = read_prefix(c, prefix)) return f;
  h.legacy_version = prefix.legacy_version;
  h.random = prefix.random;
  h.session_id = std::move(prefix.session_id);

  size_t at = c.offset();
  uint16_t cs_len = 0;
  if (!c.u16(cs_len)) return fail_at(HelloError::TruncatedBody, kHandshakeLengthOffset);
  if (cs_len < 2 || cs_len % 2 != 0 || cs_len > c.remaining())
    return fail_at(HelloError::BadCipherSuitesLength, at);
  for (Cursor cs = c.take(cs_len); !cs.empty();) {
    uint16_t suite = 0;
    cs.u16(suite);  // cannot fail: even length
    h.cipher_suites.push_back(suite);
  }

  at = c.offset();
  uint8_t comp_len = 0;
  std::span<const uint8_t> comp;
  if (!c.u8(comp_len)) return fail_at(HelloError::TruncatedBody, kHandshakeLengthOffset);
  if (comp_len == 0 || !c.bytes(comp_len, comp))
    return fail_at(HelloError::BadCompressionLength, at);
  h.compression_methods = to_vector(comp);

  return read_extensions(c, h.has_extensions_block, h.extensions, [&h](uint16_t type, Cursor data) {
    switch (type) {
      case extension_type::kServerName:
        return decode_sni(data, h.server_name);
      case extension_type::kAlpn:
        return decode_alpn(data, h.alpn_protocols);
      case extension_type::kSupportedVersions:
        return decode_client_versions(data, h.supported_versions);
      case extension_type::kSessionTicket: {
        std::span<const uint8_t> ticket;
        data.bytes(data.remaining(), ticket);
        h.has_session_ticket = true;
        h.session_ticket = to_vector(ticket);
        return ok();
      }
      case extension_type::kPreSharedKey:
        return decode_psk(data, h.psk_identities);
      case extension_type::kPskKeyExchangeModes:
        return decode_psk_modes(data, h.psk_key_exchange_modes);
      case extension_type::kEarlyData:
        // RFC 8446 4.2.10: empty in a ClientHello.
        if (!data.empty()) return fail_at(HelloError::BadEarlyData, data.offset());
        h.early_data = true;
        return ok();
      default:
        return ok();
    }
  });
}

Failure parse_server_hello(std::span<const uint8_t> msg, ServerHello& h) {
  Cursor c(msg, kHandshakeHeaderBytes, msg.size());
  HelloPrefix prefix;
  if (Failure f = read_prefix(c, prefix)) return f;
  h.legacy_version = prefix.legacy_version;
  h.random = prefix.random;
  h.session_id = std::move(prefix.session_id);
  if (!c.u16(h.cipher_suite) || !c.u8(h.compression_method))
    return fail_at(HelloError::TruncatedBody, kHandshakeLengthOffset);

  Failure f =
      read_extensions(c, h.has_extensions_block, h.extensions, [&](uint16_t type, Cursor data) {
        size_t at = data.offset();
        switch (type) {
          case extension_type::kSupportedVersions: {
            // RFC 8446 4.2.1: the ServerHello form is one version, and only
            // TLS 1.3 or later negotiates through it.
            uint16_t v = 0;
            if (!data.u16(v) || !data.empty() || v < version::kTls13)
              return fail_at(HelloError::BadSupportedVersions, at);
            h.has_supported_versions = true;
            h.selected_version = v;
            return ok();
          }
          case extension_type::kSessionTicket:
            // RFC 5077 3.2: the server acknowledges with an empty extension.
            if (!data.empty()) return fail_at(HelloError::BadSessionTicket, at);
            h.session_ticket_acked = true;
            return ok();
          case extension_type::kServerName:
            // RFC 6066 3: the server's acknowledgement is empty.
            if (!data.empty()) return fail_at(HelloError::BadSni, at);
            return ok();
          case extension_type::kAlpn: {
            // RFC 7301 3.1: exactly one protocol in the server's answer.
            std::vector<std::string> protocols;
            if (Failure e = decode_alpn(data, protocols)) return e;
            if (protocols.size() != 1) return fail_at(HelloError::BadAlpn, at);
            h.alpn_protocol = std::move(protocols.front());
            return ok();
          }
          case extension_type::kPreSharedKey: {
            uint16_t selected = 0;
            if (!data.u16(selected) || !data.empty())
              return fail_at(HelloError::BadPskIdentities, at);
            h.selected_psk_identity = selected;
            return ok();
          }
          default:
            return ok();
        }
      });
  if (f) return f;

  h.is_hello_retry_request = h.random == kHelloRetryRequestRandom;
  if (h.has_supported_versions) {
    // RFC 8446 4.1.3: TLS 1.3 freezes legacy_version at TLS 1.2.
    if (h.legacy_version != version::kTls12)
      return fail_at(HelloError::BadLegacyVersion, kHandshakeHeaderBytes);
  } else {
    // Without supported_versions nothing above TLS 1.2 can be negotiated.
    if (h.legacy_version > version::kTls12)
      return fail_at(HelloError::BadLegacyVersion, kHandshakeHeaderBytes);
    h.selected_version = h.legacy_version;
  }
  return ok();
}

// RFC 5077 3.3: lifetime_hint(4), ticket<0..2^16-1>, nothing after.
Failure parse_new_session_ticket(std::span<const uint8_t> msg, NewSessionTicket& t) {
  Cursor c(msg, kHandshakeHeaderBytes, msg.size());
  uint16_t len = 0;
  std::span<const uint8_t> ticket;
  if (!c.u32(t.lifetime_hint) || !c.u16(len) || !c.bytes(len, ticket) || !c.empty())
    return fail_at(HelloError::BadNewSessionTicket, kHandshakeLengthOffset);
  t.ticket = to_vector(ticket);
  return ok();
}

detail::Verdict verdict_of(Failure f) {
  return {ParseStatus::Error, f.error, static_cast<uint32_t>(f.offset)};
}

constexpr detail::Verdict kGoOn{};
constexpr detail::Verdict kDone{ParseStatus::Done, HelloError::None, 0};

// Smallest number of stream bytes that can carry a handshake message of this
// total size: each record adds a header and carries at most 2^14 bytes.
constexpr uint64_t min_stream_bytes(uint64_t message_bytes) {
  uint64_t records = (message_bytes + kMaxPlaintextRecordBytes - 1) / kMaxPlaintextRecordBytes;
  return message_bytes + records * kRecordHeaderBytes;
}

const Extension* find_in(const std::vector<Extension>& exts, uint16_t type) {
  auto it =
      std::find_if(exts.begin(), exts.end(), [type](const Extension& e) { return e.type == type; });
  return it == exts.end() ? nullptr : &*it;
}

}  // namespace

// ---------------------------------------------------------------- results

const Extension* ClientHello::find_extension(uint16_t type) const {
  return find_in(extensions, type);
}

std::span<const uint8_t> ClientHello::extension_data(const Extension& e) const {
  return std::span<const uint8_t>(message).subspan(e.offset, e.length);
}

uint16_t ClientHello::max_version() const {
  if (supported_versions.empty()) return legacy_version;
  uint16_t best = 0;
  for (uint16_t v : supported_versions)
    if (!is_grease(v)) best = std::max(best, v);
  return best;
}

bool ClientHello::offers_tls13() const {
  return std::find(supported_versions.begin(), supported_versions.end(), version::kTls13) !=
         supported_versions.end();
}

const Extension* ServerHello::find_extension(uint16_t type) const {
  return find_in(extensions, type);
}

std::span<const uint8_t> ServerHello::extension_data(const Extension& e) const {
  return std::span<const uint8_t>(message).subspan(e.offset, e.length);
}

// ---------------------------------------------------------------- record layer

namespace detail {

void RecordStream::fail(HelloError e, uint64_t offset) {
  status_ = ParseStatus::Error;
  error_ = e;
  error_offset_ = offset;
}

void RecordStream::apply(const Verdict& v, uint64_t offset) {
  if (v.status == ParseStatus::Error)
    fail(v.error, offset);
  else if (v.status == ParseStatus::Done)
    status_ = ParseStatus::Done;
}

uint64_t RecordStream::message_to_stream(uint32_t message_offset) const {
  auto crossed = std::upper_bound(msg_splits_.begin(), msg_splits_.end(), message_offset) -
                 msg_splits_.begin();
  return msg_start_ + message_offset + static_cast<uint64_t>(crossed) * kRecordHeaderBytes;
}

ParseStatus RecordStream::feed(std::span<const uint8_t> in, RecordSink& sink) {
  size_t i = 0;
  while (status_ == ParseStatus::NeedMore && i < in.size()) {
    if (pos_ >= budget_) {
      fail(HelloError::TooLarge, pos_);
      break;
    }
    // Never look at a byte past the budget, whatever the segmentation.
    std::span<const uint8_t> avail =
        in.subspan(i, std::min<uint64_t>(in.size() - i, budget_ - pos_));
    if (rec_hdr_have_ < kRecordHeaderBytes) {
      header_byte(avail[0], sink);
      ++i;
      continue;
    }
    uint8_t type = rec_hdr_[0];
    if (type == content_type::kHandshake) {
      i += handshake_bytes(avail.first(std::min(avail.size(), rec_left_)), sink);
    } else {
      small_record_byte(avail[0], sink);
      ++i;
    }
    if (status_ == ParseStatus::NeedMore && rec_left_ == 0) rec_hdr_have_ = 0;
  }
  if (status_ == ParseStatus::NeedMore && pos_ >= budget_) fail(HelloError::TooLarge, pos_);
  return status_;
}

void RecordStream::header_byte(uint8_t b, RecordSink& sink) {
  uint64_t at = pos_++;
  size_t idx = rec_hdr_have_++;
  rec_hdr_[idx] = b;
  switch (idx) {
    case 0: {
      rec_start_ = at;
      // An SSL 2.0 ClientHello starts with a 2-byte length whose top bit is
      // set, then msg_type 1 (RFC 6101 E.2); old scanners still send it.
      if (first_record_ && detect_sslv2_ && (b & 0x80) != 0) {
        sslv2_candidate_ = true;
        return;
      }
      // RFC 8446 5.1: handshake messages must not be interleaved with other
      // record types.
      if (msg_seen_ > 0 && b != content_type::kHandshake)
        return fail(HelloError::UnexpectedRecord, at);
      if (HelloError e = sink.on_content_type(b, first_record_); e != HelloError::None)
        return fail(e, at);
      return;
    }
    case 1:
      if (!sslv2_candidate_ && b != 3) return fail(HelloError::BadRecordVersion, at);
      return;
    case 2:
      if (sslv2_candidate_)
        return fail(b == handshake_type::kClientHello ? HelloError::SslV2Hello
                                                      : HelloError::NotHandshakeRecord,
                    rec_start_);
      if (b > 4) return fail(HelloError::BadRecordVersion, at);
      return;
    case 3:
      return;
    default:
      break;
  }
  size_t len = static_cast<size_t>(rec_hdr_[3]) << 8 | rec_hdr_[4];
  uint64_t len_at = at - 1;
  if (len > kMaxPlaintextRecordBytes) return fail(HelloError::RecordTooLong, len_at);
  if (len == 0) return fail(HelloError::EmptyRecord, len_at);
  uint8_t type = rec_hdr_[0];
  if (type == content_type::kChangeCipherSpec && len != 1)
    return fail(HelloError::BadChangeCipherSpec, len_at);
  if (type == content_type::kAlert && len != 2) return fail(HelloError::BadAlert, len_at);
  rec_left_ = len;
  rec_version_ = static_cast<uint16_t>(rec_hdr_[1] << 8 | rec_hdr_[2]);
  first_record_ = false;
  small_have_ = 0;
  // A message continuing into this record: remember where, to map offsets.
  // Skipped bodies need no offsets, so their splits are not kept.
  if (type == content_type::kHandshake && msg_seen_ > 0 &&
      (msg_seen_ < kHandshakeHeaderBytes || msg_action_ == MessageAction::Buffer))
    msg_splits_.push_back(static_cast<uint32_t>(msg_seen_));
}

void RecordStream::small_record_byte(uint8_t b, RecordSink& sink) {
  uint64_t at = pos_++;
  --rec_left_;
  small_[small_have_++] = b;
  if (rec_hdr_[0] == content_type::kChangeCipherSpec) {
    // RFC 5246 7.1: the single byte is 1.
    if (b != 1) return fail(HelloError::BadChangeCipherSpec, at);
    return apply(sink.on_change_cipher_spec(), rec_start_);
  }
  if (rec_hdr_[0] == content_type::kAlert) {
    // RFC 5246 7.2: level 1 (warning) or 2 (fatal).
    if (small_have_ == 1) {
      if (b != 1 && b != 2) return fail(HelloError::BadAlert, at);
      return;
    }
    return apply(sink.on_alert(small_[0], small_[1]), rec_start_);
  }
  // Unreachable: on_content_type admits no other type. Fail closed anyway.
  fail(HelloError::UnexpectedRecord, rec_start_);
}

size_t RecordStream::handshake_bytes(std::span<const uint8_t> in, RecordSink& sink) {
  size_t i = 0;
  while (status_ == ParseStatus::NeedMore && i < in.size()) {
    if (msg_seen_ < kHandshakeHeaderBytes) {
      uint8_t b = in[i++];
      uint64_t at = pos_++;
      --rec_left_;
      if (msg_seen_ == 0) {
        msg_start_ = at;
        msg_record_version_ = rec_version_;
        msg_splits_.clear();
        msg_.clear();
      }
      msg_hdr_[msg_seen_++] = b;
      if (msg_seen_ == 1) {
        if (HelloError e = sink.on_message_type(b); e != HelloError::None) fail(e, at);
        continue;
      }
      if (msg_seen_ < kHandshakeHeaderBytes) continue;
      msg_left_ = static_cast<uint32_t>(msg_hdr_[1]) << 16 |
                  static_cast<uint32_t>(msg_hdr_[2]) << 8 | msg_hdr_[3];
      if (HelloError e = sink.on_message_length(msg_hdr_[0], msg_left_, msg_action_);
          e != HelloError::None) {
        fail(e, message_to_stream(1));
        continue;
      }
      if (msg_action_ == MessageAction::Buffer) {
        msg_.reserve(kHandshakeHeaderBytes + msg_left_);
        msg_.assign(msg_hdr_.begin(), msg_hdr_.end());
      }
    } else {
      size_t n = std::min<size_t>(msg_left_, in.size() - i);
      if (msg_action_ == MessageAction::Buffer)
        msg_.insert(msg_.end(), in.begin() + i, in.begin() + i + n);
      i += n;
      pos_ += n;
      rec_left_ -= n;
      msg_left_ -= static_cast<uint32_t>(n);
      msg_seen_ += n;
    }
    if (msg_left_ > 0) continue;
    // The message is complete.
    uint8_t type = msg_hdr_[0];
    Verdict v = sink.on_message(type, msg_, msg_record_version_, rec_left_);
    if (v.status == ParseStatus::Error) {
      fail(v.error, message_to_stream(v.offset));
    } else if (v.status == ParseStatus::Done) {
      status_ = ParseStatus::Done;
    }
    msg_seen_ = 0;
  }
  return i;
}

}  // namespace detail

// ---------------------------------------------------------------- ClientHelloParser

ParseStatus ClientHelloParser::feed(std::span<const uint8_t> newly_arrived) {
  return stream_.feed(newly_arrived, *this);
}

HelloError ClientHelloParser::on_content_type(uint8_t type, bool first_record) {
  if (type == content_type::kHandshake) return HelloError::None;
  return first_record ? HelloError::NotHandshakeRecord : HelloError::UnexpectedRecord;
}

HelloError ClientHelloParser::on_message_type(uint8_t type) {
  return type == handshake_type::kClientHello ? HelloError::None : HelloError::NotClientHello;
}

HelloError ClientHelloParser::on_message_length(uint8_t, uint32_t length,
                                                detail::MessageAction& action) {
  // Refuse at once a length that cannot arrive within the budget, rather
  // than buffer up to 64 KiB of it first.
  if (min_stream_bytes(kHandshakeHeaderBytes + uint64_t{length}) > kMaxHelloBytes)
    return HelloError::HandshakeTooLong;
  action = detail::MessageAction::Buffer;
  return HelloError::None;
}

detail::Verdict ClientHelloParser::on_message(uint8_t, std::vector<uint8_t>& message,
                                              uint16_t record_version, size_t record_left) {
  ClientHello h;
  h.record_version = record_version;
  if (Failure f = parse_client_hello(message, h)) return verdict_of(f);
  // RFC 8446 5.1: a ClientHello must end at a record boundary (keys may
  // change right after it), and a client sends nothing else in its first
  // flight's handshake records.
  if (record_left > 0) return verdict_of(fail_at(HelloError::TrailingBytes, message.size()));
  h.message = std::move(message);
  hello_ = std::move(h);
  return kDone;
}

detail::Verdict ClientHelloParser::on_change_cipher_spec() {
  return {ParseStatus::Error, HelloError::UnexpectedRecord, 0};
}

detail::Verdict ClientHelloParser::on_alert(uint8_t, uint8_t) {
  return {ParseStatus::Error, HelloError::UnexpectedRecord, 0};
}

// ---------------------------------------------------------------- ServerFlightParser

ParseStatus ServerFlightParser::feed(std::span<const uint8_t> newly_arrived) {
  return stream_.feed(newly_arrived, *this);
}

HelloError ServerFlightParser::on_content_type(uint8_t type, bool) {
  switch (type) {
    case content_type::kHandshake:
    case content_type::kAlert:
      return HelloError::None;
    case content_type::kChangeCipherSpec:
      // Before the ServerHello the version (and so the meaning of a CCS) is
      // unknown; TLS 1.3's compatibility CCS comes after it, when we are Done.
      return has_server_hello_ ? HelloError::None : HelloError::UnexpectedRecord;
    case content_type::kApplicationData:
      return HelloError::UnexpectedRecord;
    default:
      return HelloError::NotHandshakeRecord;
  }
}

HelloError ServerFlightParser::on_message_type(uint8_t type) {
  if (!has_server_hello_)
    return type == handshake_type::kServerHello ? HelloError::None : HelloError::NotServerHello;
  // RFC 5246 7.3 and RFC 5077 3.1: Certificate, CertificateStatus,
  // ServerKeyExchange, CertificateRequest, then ServerHelloDone; after the
  // client's flight (or right after the ServerHello when resuming), at most
  // one NewSessionTicket, then ChangeCipherSpec.
  switch (type) {
    case handshake_type::kCertificate:
    case handshake_type::kCertificateStatus:
    case handshake_type::kServerKeyExchange:
    case handshake_type::kCertificateRequest:
    case handshake_type::kServerHelloDone:
      return saw_server_hello_done_ || ticket_ ? HelloError::UnexpectedMessage : HelloError::None;
    case handshake_type::kNewSessionTicket:
      return ticket_ || !server_hello_.session_ticket_acked ? HelloError::UnexpectedMessage
                                                            : HelloError::None;
    default:
      return HelloError::UnexpectedMessage;
  }
}

HelloError ServerFlightParser::on_message_length(uint8_t type, uint32_t length,
                                                 detail::MessageAction& action) {
  if (type == handshake_type::kServerHello || type == handshake_type::kNewSessionTicket) {
    if (kHandshakeHeaderBytes + uint64_t{length} > kMaxHelloBytes)
      return HelloError::HandshakeTooLong;
    action = detail::MessageAction::Buffer;
  } else {
    // Certificate chains can be large; nothing in them matters here.
    action = detail::MessageAction::Skip;
  }
  return HelloError::None;
}

detail::Verdict ServerFlightParser::on_message(uint8_t type, std::vector<uint8_t>& message,
                                               uint16_t record_version, size_t record_left) {
  switch (type) {
    case handshake_type::kServerHello: {
      ServerHello h;
      h.record_version = record_version;
      if (Failure f = parse_server_hello(message, h)) return verdict_of(f);
      bool final_cleartext = h.is_hello_retry_request || h.selected_version >= version::kTls13;
      // RFC 8446 5.1: the ServerHello precedes a key change, so it must end
      // its record.
      if (final_cleartext && record_left > 0)
        return verdict_of(fail_at(HelloError::TrailingBytes, message.size()));
      h.message = std::move(message);
      server_hello_ = std::move(h);
      has_server_hello_ = true;
      return final_cleartext ? kDone : kGoOn;
    }
    case handshake_type::kNewSessionTicket: {
      NewSessionTicket t;
      if (Failure f = parse_new_session_ticket(message, t)) return verdict_of(f);
      ticket_ = std::move(t);
      return kGoOn;
    }
    case handshake_type::kServerHelloDone:
      saw_server_hello_done_ = true;
      return kGoOn;
    default:
      return kGoOn;
  }
}

detail::Verdict ServerFlightParser::on_change_cipher_spec() {
  // Everything after the server's CCS is encrypted.
  return kDone;
}

detail::Verdict ServerFlightParser::on_alert(uint8_t level, uint8_t description) {
  alert_ = AlertRecord{level, description};
  return {ParseStatus::Error, HelloError::Alert, 0};
}

}  // namespace edgepin::tls
