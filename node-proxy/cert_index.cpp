#include "cert_index.h"

#include <algorithm>

namespace edgepin::nodeproxy {
namespace {

// Big-endian reads; callers check the bounds first.
uint16_t read_u16(std::span<const uint8_t> b, size_t at) {
  return static_cast<uint16_t>((b[at] << 8) | b[at + 1]);
}

bool is_label_char(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'; }

}  // namespace

std::optional<std::string_view> parse_server_name(std::span<const uint8_t> extension) {
  if (extension.size() < 2) return std::nullopt;
  const size_t list_length = read_u16(extension, 0);
  if (2 + list_length != extension.size()) return std::nullopt;
  std::optional<std::string_view> host;
  size_t at = 2;
  while (at < extension.size()) {
    if (at + 3 > extension.size()) return std::nullopt;
    const uint8_t type = extension[at];
    const size_t length = read_u16(extension, at + 1);
    at += 3;
    if (at + length > extension.size()) return std::nullopt;
    // RFC 6066 allows one name per type; the first host_name is the one
    // OpenSSL (and every server we know) uses.
    if (type == kSniHostNameType && !host && length > 0) {
      host = std::string_view(reinterpret_cast<const char*>(extension.data() + at), length);
    }
    at += length;
  }
  return host;
}

std::optional<SignatureSupport> parse_signature_algorithms(std::span<const uint8_t> extension) {
  if (extension.size() < 2) return std::nullopt;
  const size_t length = read_u16(extension, 0);
  if (length == 0 || length % 2 != 0 || 2 + length != extension.size()) return std::nullopt;
  SignatureSupport support;
  for (size_t at = 2; at + 2 <= extension.size(); at += 2) {
    const uint16_t scheme = read_u16(extension, at);
    const uint8_t hash = static_cast<uint8_t>(scheme >> 8);
    const uint8_t signature = static_cast<uint8_t>(scheme & 0xFF);
    const bool legacy_hash = hash >= kHashMd5 && hash <= kHashSha512;
    if (legacy_hash && signature == kSigEcdsa) support.ecdsa = true;
    if (legacy_hash && signature == kSigRsa) support.rsa = true;
    if (scheme >= kSigRsaPssRsaeSha256 && scheme <= kSigRsaPssRsaeSha512) support.rsa = true;
  }
  return support;
}

bool offers_tls13(std::span<const uint8_t> extension) {
  if (extension.empty()) return false;
  const size_t length = extension[0];
  if (length % 2 != 0 || 1 + length != extension.size()) return false;
  for (size_t at = 1; at + 2 <= extension.size(); at += 2) {
    if (read_u16(extension, at) == kTls13Version) return true;
  }
  return false;
}

std::optional<std::string> normalize_dns_name(std::string_view name, bool allow_wildcard) {
  if (!name.empty() && name.back() == '.') name.remove_suffix(1);
  std::string out;
  if (allow_wildcard && name.size() > 2 && name[0] == '*' && name[1] == '.') {
    out = "*.";
    name.remove_prefix(2);
  }
  if (name.empty() || out.size() + name.size() > kMaxHostNameLength) return std::nullopt;
  size_t label = 0;
  for (char c : name) {
    const char lower = (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
    if (lower == '.') {
      if (label == 0) return std::nullopt;  // empty label: "a..b", ".a"
      label = 0;
    } else {
      if (!is_label_char(lower) || ++label > kMaxLabelLength) return std::nullopt;
    }
    out.push_back(lower);
  }
  if (label == 0) return std::nullopt;  // trailing empty label: "a.."
  return out;
}

std::vector<std::string> CertificateIndex::add(size_t id, KeyKind kind,
                                               std::span<const std::string> names) {
  Entry entry;
  entry.id = id;
  entry.kind = kind;
  for (const std::string& raw : names) {
    if (auto n = normalize_dns_name(raw, /*allow_wildcard=*/true))
      entry.names.push_back(std::move(*n));
  }
  std::sort(entry.names.begin(), entry.names.end());
  entry.names.erase(std::unique(entry.names.begin(), entry.names.end()), entry.names.end());

  const size_t index = entries_.size();
  for (const std::string& n : entry.names) {
    if (n.starts_with("*.")) {
      wildcard_[n.substr(2)].push_back(index);
    } else {
      exact_[n].push_back(index);
    }
  }
  std::vector<std::string> indexed = entry.names;
  entries_.push_back(std::move(entry));
  if (entries_.size() == 1) {
    set_default(id);
  } else if (!indexed.empty() && entries_[default_group_.front()].names == indexed) {
    default_group_.push_back(index);  // an alternative of the default
  }
  return indexed;
}

void CertificateIndex::set_default(size_t id) {
  auto it =
      std::find_if(entries_.begin(), entries_.end(), [&](const Entry& e) { return e.id == id; });
  if (it == entries_.end()) return;
  const size_t index = static_cast<size_t>(it - entries_.begin());
  default_group_.assign(1, index);
  // A certificate without names has no alternatives: "the same names"
  // would otherwise group every nameless certificate together.
  if (it->names.empty()) return;
  for (size_t i = 0; i < entries_.size(); ++i) {
    if (i != index && entries_[i].names == it->names) default_group_.push_back(i);
  }
}

std::optional<size_t> CertificateIndex::pick(const std::vector<size_t>& candidates,
                                             ClientCapabilities caps) const {
  if (caps.ecdsa) {
    for (size_t i : candidates) {
      if (entries_[i].kind == KeyKind::Ecdsa) return i;
    }
  }
  if (caps.rsa) {
    for (size_t i : candidates) {
      if (entries_[i].kind == KeyKind::Rsa) return i;
    }
  }
  return std::nullopt;
}

CertificateIndex::Selection CertificateIndex::select(std::string_view sni,
                                                     ClientCapabilities caps) const {
  if (!sni.empty()) {
    if (auto name = normalize_dns_name(sni, /*allow_wildcard=*/false)) {
      if (auto it = exact_.find(*name); it != exact_.end()) {
        if (auto i = pick(it->second, caps)) return {entries_[*i].id, Match::Exact};
      }
      // "a.example.com" matches "*.example.com"; "example.com" and
      // "a.b.example.com" do not.
      if (const size_t dot = name->find('.'); dot != std::string::npos) {
        if (auto it = wildcard_.find(name->substr(dot + 1)); it != wildcard_.end()) {
          if (auto i = pick(it->second, caps)) return {entries_[*i].id, Match::Wildcard};
        }
      }
    }
  }
  if (default_group_.empty()) return {};  // nothing added: the caller's contract
  if (auto i = pick(default_group_, caps)) return {entries_[*i].id, Match::Default};
  return {entries_[default_group_.front()].id, Match::Default};
}

}  // namespace edgepin::nodeproxy
