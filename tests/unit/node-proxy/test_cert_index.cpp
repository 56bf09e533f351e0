// The certificate index alone (no OpenSSL): ClientHello extension readers,
// DNS name normalization, and the selection order exact → wildcard →
// default with the key type the client can verify.
#include "cert_index.h"

#include <catch2/catch.hpp>

#include <string>
#include <vector>

using namespace edgepin::nodeproxy;

namespace {

std::vector<uint8_t> server_name_ext(const std::vector<std::pair<uint8_t, std::string>>& entries) {
  std::vector<uint8_t> list;
  for (const auto& [type, name] : entries) {
    list.push_back(type);
    list.push_back(static_cast<uint8_t>(name.size() >> 8));
    list.push_back(static_cast<uint8_t>(name.size()));
    for (char c : name) list.push_back(static_cast<uint8_t>(c));
  }
  std::vector<uint8_t> ext;
  ext.push_back(static_cast<uint8_t>(list.size() >> 8));
  ext.push_back(static_cast<uint8_t>(list.size()));
  for (uint8_t b : list) ext.push_back(b);
  return ext;
}

std::vector<uint8_t> sigalgs_ext(const std::vector<uint16_t>& schemes) {
  const size_t n = schemes.size() * 2;
  std::vector<uint8_t> ext;
  ext.push_back(static_cast<uint8_t>(n >> 8));
  ext.push_back(static_cast<uint8_t>(n));
  for (uint16_t s : schemes) {
    ext.push_back(static_cast<uint8_t>(s >> 8));
    ext.push_back(static_cast<uint8_t>(s));
  }
  return ext;
}

constexpr ClientCapabilities kBoth{.rsa = true, .ecdsa = true};
constexpr ClientCapabilities kRsaOnly{.rsa = true, .ecdsa = false};
constexpr ClientCapabilities kEcdsaOnly{.rsa = false, .ecdsa = true};

}  // namespace

TEST_CASE("server_name: the first host_name, malformed bodies refused", "[cert_index]") {
  CHECK(parse_server_name(server_name_ext({{0, "example.com"}})) == "example.com");
  CHECK(parse_server_name(server_name_ext({{7, "other"}, {0, "b.test"}})) == "b.test");
  CHECK_FALSE(parse_server_name(server_name_ext({{7, "other"}})));
  CHECK_FALSE(parse_server_name(server_name_ext({{0, ""}})));
  CHECK_FALSE(parse_server_name({}));

  auto ext = server_name_ext({{0, "example.com"}});
  // Every truncation is refused, never read past.
  for (size_t n = 0; n < ext.size(); ++n) {
    INFO("first " << n << " bytes");
    CHECK_FALSE(parse_server_name(std::span<const uint8_t>(ext.data(), n)));
  }
  auto trailing = ext;
  trailing.push_back(0);
  CHECK_FALSE(parse_server_name(trailing));
  auto overrun = ext;
  overrun[4] = 0xFF;  // entry length beyond the body
  CHECK_FALSE(parse_server_name(overrun));
}

TEST_CASE("signature_algorithms: key types by scheme", "[cert_index]") {
  auto both = parse_signature_algorithms(sigalgs_ext({0x0403, 0x0804, 0x0401}));
  REQUIRE(both);
  CHECK(both->ecdsa);
  CHECK(both->rsa);
  auto ecdsa =
      parse_signature_algorithms(sigalgs_ext({0x0403, 0x0503, 0x0807}));  // 0x0807: ed25519
  REQUIRE(ecdsa);
  CHECK(ecdsa->ecdsa);
  CHECK_FALSE(ecdsa->rsa);
  auto pss_only = parse_signature_algorithms(sigalgs_ext({0x0806}));
  REQUIRE(pss_only);
  CHECK(pss_only->rsa);
  CHECK_FALSE(pss_only->ecdsa);
  auto pss_pss = parse_signature_algorithms(sigalgs_ext({0x0809}));  // needs an RSASSA-PSS key
  REQUIRE(pss_pss);
  CHECK_FALSE(pss_pss->rsa);

  CHECK_FALSE(parse_signature_algorithms({}));
  CHECK_FALSE(parse_signature_algorithms(sigalgs_ext({})));  // empty list
  std::vector<uint8_t> odd = {0x00, 0x03, 0x04, 0x03, 0x05};
  CHECK_FALSE(parse_signature_algorithms(odd));
  std::vector<uint8_t> short_body = {0x00, 0x04, 0x04, 0x03};
  CHECK_FALSE(parse_signature_algorithms(short_body));
}

TEST_CASE("supported_versions: TLS 1.3 offered or not", "[cert_index]") {
  const std::vector<uint8_t> with13 = {0x04, 0x03, 0x04, 0x03, 0x03};
  const std::vector<uint8_t> only12 = {0x02, 0x03, 0x03};
  const std::vector<uint8_t> bad_length = {0x04, 0x03, 0x04};
  CHECK(offers_tls13(with13));
  CHECK_FALSE(offers_tls13(only12));
  CHECK_FALSE(offers_tls13(bad_length));
  CHECK_FALSE(offers_tls13({}));
}

TEST_CASE("DNS names are normalized, junk refused", "[cert_index]") {
  CHECK(normalize_dns_name("Example.COM.", false) == "example.com");
  CHECK(normalize_dns_name("*.Example.com", true) == "*.example.com");
  CHECK_FALSE(normalize_dns_name("*.example.com", false));
  CHECK_FALSE(normalize_dns_name("a*.example.com", true));
  CHECK_FALSE(normalize_dns_name("*", true));
  CHECK_FALSE(normalize_dns_name("Edgepin Test CA", true));
  CHECK_FALSE(normalize_dns_name("a..b", false));
  CHECK_FALSE(normalize_dns_name(".a", false));
  CHECK_FALSE(normalize_dns_name("", false));
  CHECK_FALSE(normalize_dns_name(std::string(64, 'a') + ".test", false));
  CHECK(normalize_dns_name(std::string(63, 'a') + ".test", false));
  std::string long_name;
  while (long_name.size() < 260) long_name += "abcdefghi.";
  CHECK_FALSE(normalize_dns_name(long_name, false));
}

TEST_CASE("selection: exact before wildcard before default, usable key types first",
          "[cert_index]") {
  CertificateIndex index;
  const std::vector<std::string> def = {"default.test"};
  const std::vector<std::string> site = {"site.test", "www.site.test", "Not A Name"};
  const std::vector<std::string> wild = {"*.wild.test"};
  const std::vector<std::string> exact_in_wild = {"exact.wild.test"};
  CHECK(index.add(0, KeyKind::Ecdsa, def) == def);
  CHECK(index.add(1, KeyKind::Rsa, site) == std::vector<std::string>{"site.test", "www.site.test"});
  index.add(2, KeyKind::Ecdsa, site);
  index.add(3, KeyKind::Rsa, wild);
  index.add(4, KeyKind::Rsa, exact_in_wild);
  index.add(5, KeyKind::Rsa, def);  // the default's RSA alternative

  using M = CertificateIndex::Match;
  auto sel = [&](std::string_view sni, ClientCapabilities caps) { return index.select(sni, caps); };
  CHECK(sel("site.test", kBoth).id == 2);  // ECDSA preferred
  CHECK(sel("site.test", kBoth).match == M::Exact);
  CHECK(sel("SITE.test.", kRsaOnly).id == 1);
  CHECK(sel("exact.wild.test", kBoth).id == 4);  // exact beats wildcard
  CHECK(sel("x.wild.test", kBoth).id == 3);
  CHECK(sel("x.wild.test", kBoth).match == M::Wildcard);
  CHECK(sel("x.wild.test", kEcdsaOnly).id == 0);  // unusable wildcard: default
  CHECK(sel("x.y.wild.test", kBoth).id == 0);
  CHECK(sel("", kBoth).id == 0);
  CHECK(sel("", kBoth).match == M::Default);
  CHECK(sel("", kRsaOnly).id == 5);
  CHECK(sel("bad name!", kRsaOnly).id == 5);
  // A client that can verify nothing we hold gets the default and fails
  // its handshake in OpenSSL.
  CHECK(sel("site.test", ClientCapabilities{}).id == 0);

  index.set_default(3);
  CHECK(sel("unknown.test", kBoth).id == 3);
  CHECK(sel("unknown.test", kEcdsaOnly).id == 3);  // no ECDSA alternative for *.wild.test
}
