// Tests for common/tls_hello: ClientHelloParser and ServerFlightParser.
//
// 1. Real clients (openssl s_client and /usr/bin/python3's ssl) talk to a
//    real OpenSSL server (TlsRecorder) that records the bytes both ways; the
//    parsers must find in them what the client and server really exchanged:
//    SNI, ALPN, versions, the session ID, TLS 1.2 ticket or TLS 1.3 PSK
//    identity that the client was given, HelloRetryRequest.
// 2. Every stream, recorded or built, gives the same result fed whole, byte
//    by byte and split at random points, and every strict prefix of a valid
//    stream answers NeedMore.
// 3. Each malformation gives its own error code at the right offset.
//
// With EDGEPIN_DUMP_TLS_CORPUS=DIR the recorded streams and the malformed
// cases are also written to DIR (that is how tests/fuzz/corpus/tls_hello/
// was seeded).
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "tests/helpers/client_hello_builder.h"
#include "tests/helpers/process.h"
#include "tests/helpers/temp_dir.h"
#include "tests/helpers/test_pki.h"
#include "tests/helpers/tls_recorder.h"
#include "tls_hello.h"

using namespace std::chrono_literals;
using edgepin::ParseStatus;
using namespace edgepin::tls;
using namespace edgepin::test;

namespace {

const std::string kPython = "/usr/bin/python3";
const std::string kClientScript = EDGEPIN_SOURCE_DIR "/tests/helpers/tls_client.py";
const std::string kCorpusDir = EDGEPIN_SOURCE_DIR "/tests/fuzz/corpus/tls_hello";
constexpr auto kClientTimeout = 20s;
constexpr auto kRecordTimeout = 10s;
const std::string kHost = "edgepin.test";
// 16 recognisable bytes: every ticket the recorder issues starts with them.
constexpr std::array<uint8_t, 16> kTicketKeyName = {0xE9, 0x7E, 0x57, 0x00, 0x01, 0x02, 0x03, 0x04,
                                                    0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x0C};

// ---------------------------------------------------------------- outcomes

struct ClientOutcome {
  ParseStatus status;
  HelloError error;
  uint64_t error_offset;
  uint64_t consumed;
  std::optional<ClientHello> hello;
  bool operator==(const ClientOutcome&) const = default;
};

struct ServerOutcome {
  ParseStatus status;
  HelloError error;
  uint64_t error_offset;
  uint64_t consumed;
  bool has_server_hello;
  std::optional<ServerHello> server_hello;
  std::optional<NewSessionTicket> ticket;
  std::optional<AlertRecord> alert;
  bool operator==(const ServerOutcome&) const = default;
};

ClientOutcome outcome_of(const ClientHelloParser& p) {
  ClientOutcome o{p.status(), p.error(), p.error_offset(), p.consumed(), std::nullopt};
  if (p.status() == ParseStatus::Done) o.hello = p.hello();
  return o;
}

ServerOutcome outcome_of(const ServerFlightParser& p) {
  ServerOutcome o{p.status(),           p.error(),    p.error_offset(),       p.consumed(),
                  p.has_server_hello(), std::nullopt, p.new_session_ticket(), p.alert()};
  if (p.has_server_hello()) o.server_hello = p.server_hello();
  return o;
}

std::string describe(const ClientOutcome& o) {
  return std::string(edgepin::to_string(o.status)) + " " + std::string(to_string(o.error)) + "@" +
         std::to_string(o.error_offset) + " consumed " + std::to_string(o.consumed);
}
std::string describe(const ServerOutcome& o) {
  return std::string(edgepin::to_string(o.status)) + " " + std::string(to_string(o.error)) + "@" +
         std::to_string(o.error_offset) + " consumed " + std::to_string(o.consumed);
}

// Feeds the pieces between `cuts` (increasing offsets) in order.
template <typename Parser>
auto parse_pieces(std::span<const uint8_t> in, const std::vector<size_t>& cuts) {
  Parser p;
  size_t prev = 0;
  for (size_t c : cuts) {
    p.feed(in.subspan(prev, c - prev));
    prev = c;
  }
  p.feed(in.subspan(prev));
  return outcome_of(p);
}

template <typename Parser>
auto parse_whole(std::span<const uint8_t> in) {
  return parse_pieces<Parser>(in, {});
}

ClientOutcome parse_client(std::span<const uint8_t> in) {
  return parse_whole<ClientHelloParser>(in);
}
ServerOutcome parse_server(std::span<const uint8_t> in) {
  return parse_whole<ServerFlightParser>(in);
}

// Whole, byte by byte, and 20 seeded random segmentations agree.
template <typename Parser>
void check_split_invariance(std::span<const uint8_t> in) {
  const auto whole = parse_whole<Parser>(in);
  INFO("whole: " << describe(whole));
  std::vector<size_t> every;
  for (size_t i = 1; i < in.size(); ++i) every.push_back(i);
  CHECK(parse_pieces<Parser>(in, every) == whole);
  std::mt19937 rng(0xED6E + static_cast<uint32_t>(in.size()));
  for (int round = 0; round < 20 && in.size() > 1; ++round) {
    std::uniform_int_distribution<size_t> count(1, std::min<size_t>(in.size() - 1, 40));
    std::uniform_int_distribution<size_t> point(1, in.size() - 1);
    std::vector<size_t> cuts;
    for (size_t k = count(rng); k > 0; --k) cuts.push_back(point(rng));
    std::sort(cuts.begin(), cuts.end());
    cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());
    CHECK(parse_pieces<Parser>(in, cuts) == whole);
  }
}

// Every strict prefix of what the parser needed answers NeedMore; any
// longer prefix gives the full result.
template <typename Parser>
void check_prefixes(std::span<const uint8_t> in) {
  const auto whole = parse_whole<Parser>(in);
  REQUIRE(whole.status == ParseStatus::Done);
  for (size_t n = 0; n < whole.consumed; ++n) {
    auto o = parse_whole<Parser>(in.first(n));
    if (o.status != ParseStatus::NeedMore) FAIL("prefix of " << n << " bytes: " << describe(o));
  }
  CHECK(parse_whole<Parser>(in.first(whole.consumed)) == whole);
}

// ---------------------------------------------------------------- corpus dump

// Seeds larger than this would make libFuzzer mutate huge inputs; the
// TooLarge path keeps a smaller seed.
constexpr size_t kMaxSeedBytes = 96 * 1024;

void maybe_dump(const std::string& name, std::span<const uint8_t> bytes) {
  const char* dir = std::getenv("EDGEPIN_DUMP_TLS_CORPUS");
  if (!dir || !*dir || bytes.size() > kMaxSeedBytes) return;
  std::ofstream out(std::filesystem::path(dir) / name, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

std::vector<uint8_t> read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)),
                              std::istreambuf_iterator<char>());
}

// ---------------------------------------------------------------- real peers

struct Pki {
  TempDir dir{"edgepin-tls-hello-"};
  TestPki pki{dir.path()};
  PemFiles server = pki.issue("server", server_spec());

  static CertSpec server_spec() {
    CertSpec spec;
    spec.common_name = kHost;
    spec.dns_names = {kHost, "localhost"};
    spec.ip_addresses = {"127.0.0.1"};
    return spec;
  }
};

Pki& pki() {
  static Pki p;
  return p;
}

TlsRecorder::Options recorder_options(int min_version, int max_version, size_t connections) {
  TlsRecorder::Options o;
  o.cert_file = pki().server.chain;
  o.key_file = pki().server.key;
  o.min_version = min_version;
  o.max_version = max_version;
  o.connections = connections;
  o.deadline = 60s;
  return o;
}

// openssl s_client's options, set by chained calls.
struct SClient {
  std::string version;  // -tls1_3 or -tls1_2
  std::optional<std::string> sni;
  std::optional<std::string> alpn;  // comma-separated
  bool no_ticket = false;
  std::string groups;
  std::filesystem::path sess_out;
  std::filesystem::path sess_in;

  explicit SClient(std::string v) : version(std::move(v)) {}
  SClient& with_sni(std::string s) {
    sni = std::move(s);
    return *this;
  }
  SClient& with_alpn(std::string a) {
    alpn = std::move(a);
    return *this;
  }
  SClient& without_tickets() {
    no_ticket = true;
    return *this;
  }
  SClient& with_groups(std::string g) {
    groups = std::move(g);
    return *this;
  }
  SClient& save_to(std::filesystem::path p) {
    sess_out = std::move(p);
    return *this;
  }
  SClient& resume_from(std::filesystem::path p) {
    sess_in = std::move(p);
    return *this;
  }
};

ProcessOptions command(std::vector<std::string> argv) {
  ProcessOptions o;
  o.argv = std::move(argv);
  return o;
}

TestPskIdentity psk(std::vector<uint8_t> identity, uint32_t age = 0) {
  TestPskIdentity id;
  id.identity = std::move(identity);
  id.obfuscated_ticket_age = age;
  return id;
}

void run_s_client(uint16_t port, const SClient& c) {
  std::vector<std::string> argv = {"openssl",  "s_client",
                                   "-connect", "127.0.0.1:" + std::to_string(port),
                                   c.version,  "-ign_eof"};
  if (c.sni) {
    argv.insert(argv.end(), {"-servername", *c.sni});
  } else {
    argv.push_back("-noservername");
  }
  if (c.alpn) argv.insert(argv.end(), {"-alpn", *c.alpn});
  if (c.no_ticket) argv.push_back("-no_ticket");
  if (!c.groups.empty()) argv.insert(argv.end(), {"-groups", c.groups});
  if (!c.sess_out.empty()) argv.insert(argv.end(), {"-sess_out", c.sess_out.string()});
  if (!c.sess_in.empty()) argv.insert(argv.end(), {"-sess_in", c.sess_in.string()});
  ProcessResult r = run_process(command(argv), kClientTimeout);
  INFO("s_client: " << r.describe());
  REQUIRE(r.ok());
}

std::vector<nlohmann::json> run_python_client(uint16_t port, std::vector<std::string> args) {
  std::vector<std::string> argv = {kPython,    kClientScript,
                                   "--port",   std::to_string(port),
                                   "--cafile", pki().pki.ca_cert().string()};
  argv.insert(argv.end(), args.begin(), args.end());
  ProcessResult r = run_process(command(argv), kClientTimeout);
  INFO("tls_client.py: " << r.describe());
  REQUIRE(r.ok());
  std::vector<nlohmann::json> lines;
  size_t start = 0;
  for (size_t nl; (nl = r.out.find('\n', start)) != std::string::npos; start = nl + 1)
    lines.push_back(nlohmann::json::parse(r.out.substr(start, nl - start)));
  return lines;
}

RecordedConnection recorded(TlsRecorder& rec, size_t index) {
  auto c = rec.connection(index, kRecordTimeout);
  REQUIRE(c.has_value());
  INFO("server error: " << c->error);
  REQUIRE(c->handshake_ok);
  return *c;
}

// What every recorded connection must satisfy, whatever the scenario: both
// streams parse, the results do not depend on segmentation, prefixes answer
// NeedMore, and the parsers agree with what the server saw.
struct Parsed {
  ClientHello hello;
  ServerOutcome flight;
};

Parsed check_recorded(const std::string& name, const RecordedConnection& c) {
  INFO("connection " << name);
  maybe_dump(name + ".client", c.client_bytes);
  maybe_dump(name + ".server", c.server_bytes);
  ClientOutcome co = parse_client(c.client_bytes);
  INFO("client: " << describe(co));
  REQUIRE(co.status == ParseStatus::Done);
  ServerOutcome so = parse_server(c.server_bytes);
  INFO("server: " << describe(so));
  REQUIRE(so.status == ParseStatus::Done);
  REQUIRE(so.server_hello.has_value());
  check_split_invariance<ClientHelloParser>(c.client_bytes);
  check_split_invariance<ServerFlightParser>(c.server_bytes);
  check_prefixes<ClientHelloParser>(c.client_bytes);
  check_prefixes<ServerFlightParser>(c.server_bytes);

  const ClientHello& h = *co.hello;
  const ServerHello& sh = *so.server_hello;
  CHECK(h.server_name.value_or("") == c.server_name);
  CHECK(sh.selected_version == c.version);
  // TLS 1.3 moves the ALPN answer into the encrypted EncryptedExtensions.
  CHECK(sh.alpn_protocol.value_or("") == (c.version >= TLS1_3_VERSION ? "" : c.alpn));
  CHECK(std::find(h.cipher_suites.begin(), h.cipher_suites.end(), sh.cipher_suite) !=
        h.cipher_suites.end());
  if (c.version >= TLS1_3_VERSION) {
    // TLS 1.3 echoes the client's random legacy_session_id.
    CHECK(sh.session_id == h.session_id);
    CHECK(so.consumed == sh.message.size() + kRecordHeaderBytes);
  } else {
    // The flight ends with the server's ChangeCipherSpec record.
    CHECK(c.server_bytes[so.consumed - 6] == content_type::kChangeCipherSpec);
  }
  return {h, so};
}

std::vector<uint8_t> hex_to_bytes(const std::string& hex) {
  std::vector<uint8_t> out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2)
    out.push_back(static_cast<uint8_t>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return out;
}

std::vector<uint8_t> first_bytes(const std::vector<uint8_t>& v, size_t n) {
  return std::vector<uint8_t>(v.begin(), v.begin() + static_cast<ptrdiff_t>(std::min(n, v.size())));
}

}  // namespace

// ================================================================ real clients

TEST_CASE(
    "openssl s_client ClientHellos and server flights, TLS 1.3 and 1.2, with and without SNI and "
    "ALPN",
    "[tls_hello][real]") {
  struct Case {
    const char* name;
    const char* flag;
    int version;
    bool sni_alpn;
  };
  for (Case k : {Case{"openssl-tls13-sni-alpn", "-tls1_3", TLS1_3_VERSION, true},
                 Case{"openssl-tls13-plain", "-tls1_3", TLS1_3_VERSION, false},
                 Case{"openssl-tls12-sni-alpn", "-tls1_2", TLS1_2_VERSION, true},
                 Case{"openssl-tls12-plain", "-tls1_2", TLS1_2_VERSION, false}}) {
    INFO(k.name);
    auto opts = recorder_options(TLS1_2_VERSION, TLS1_3_VERSION, 1);
    opts.alpn = {"http/1.1"};
    TlsRecorder rec(opts);
    SClient c(k.flag);
    if (k.sni_alpn) c.with_sni(kHost).with_alpn("h2,http/1.1");
    run_s_client(rec.port(), c);
    Parsed p = check_recorded(k.name, recorded(rec, 0));
    if (k.sni_alpn) {
      CHECK(p.hello.server_name == kHost);
      CHECK(p.hello.alpn_protocols == std::vector<std::string>{"h2", "http/1.1"});
      if (k.version == TLS1_2_VERSION) CHECK(p.flight.server_hello->alpn_protocol == "http/1.1");
    } else {
      CHECK_FALSE(p.hello.server_name);
      CHECK(p.hello.alpn_protocols.empty());
      CHECK_FALSE(p.flight.server_hello->alpn_protocol);
    }
    CHECK(p.hello.max_version() == k.version);
    CHECK(p.hello.offers_tls13() == (k.version == TLS1_3_VERSION));
    CHECK(p.hello.record_version >= version::kTls10);
    CHECK(p.flight.server_hello->selected_version == k.version);
    CHECK_FALSE(p.flight.server_hello->is_hello_retry_request);
  }
}

TEST_CASE(
    "Python ssl ClientHellos and server flights, TLS 1.3 and 1.2, with and without SNI and ALPN",
    "[tls_hello][real]") {
  struct Case {
    const char* name;
    const char* tls;
    int version;
    bool sni_alpn;
  };
  for (Case k : {Case{"python-tls13-sni-alpn", "1.3", TLS1_3_VERSION, true},
                 Case{"python-tls13-plain", "1.3", TLS1_3_VERSION, false},
                 Case{"python-tls12-sni-alpn", "1.2", TLS1_2_VERSION, true},
                 Case{"python-tls12-plain", "1.2", TLS1_2_VERSION, false}}) {
    INFO(k.name);
    auto opts = recorder_options(TLS1_2_VERSION, TLS1_3_VERSION, 1);
    opts.alpn = {"http/1.1"};
    TlsRecorder rec(opts);
    std::vector<std::string> args = {"--tls", k.tls};
    if (k.sni_alpn) args.insert(args.end(), {"--sni", kHost, "--alpn", "h2,http/1.1"});
    auto out = run_python_client(rec.port(), args);
    REQUIRE(out.size() == 1);
    Parsed p = check_recorded(k.name, recorded(rec, 0));
    if (k.sni_alpn) {
      CHECK(p.hello.server_name == kHost);
      CHECK(p.hello.alpn_protocols == std::vector<std::string>{"h2", "http/1.1"});
      CHECK(out[0]["alpn"] == "http/1.1");
    } else {
      CHECK_FALSE(p.hello.server_name);
      CHECK(p.hello.alpn_protocols.empty());
    }
    // Python pins the version with supported_versions even for TLS 1.2.
    CHECK(p.hello.max_version() == k.version);
    CHECK(p.flight.server_hello->selected_version == k.version);
  }
}

TEST_CASE("TLS 1.2 resumption by session ID: the parsers find the ID the server issued",
          "[tls_hello][real]") {
  auto opts = recorder_options(TLS1_2_VERSION, TLS1_2_VERSION, 2);
  opts.tickets = false;
  opts.session_cache = true;

  SECTION("openssl s_client -no_ticket") {
    TempDir dir;
    TlsRecorder rec(opts);
    run_s_client(rec.port(),
                 SClient("-tls1_2").with_sni(kHost).without_tickets().save_to(dir / "s1.pem"));
    RecordedConnection c0 = recorded(rec, 0);
    run_s_client(rec.port(),
                 SClient("-tls1_2").with_sni(kHost).without_tickets().resume_from(dir / "s1.pem"));
    RecordedConnection c1 = recorded(rec, 1);
    SavedSession saved = read_session_file(dir / "s1.pem");

    Parsed full = check_recorded("openssl-tls12-sessionid-full", c0);
    REQUIRE(c0.session_id.size() == kMaxSessionIdBytes);
    CHECK(full.flight.server_hello->session_id == c0.session_id);
    CHECK(saved.id == c0.session_id);
    CHECK_FALSE(full.hello.has_session_ticket);
    CHECK_FALSE(full.flight.ticket);

    Parsed resumed = check_recorded("openssl-tls12-sessionid-resume", c1);
    CHECK(c1.session_reused);
    CHECK(resumed.hello.session_id == c0.session_id);
    CHECK(resumed.flight.server_hello->session_id == c0.session_id);
    CHECK_FALSE(resumed.hello.has_session_ticket);
    CHECK(resumed.hello.psk_identities.empty());
  }
  SECTION("Python ssl with OP_NO_TICKET") {
    TlsRecorder rec(opts);
    auto out = run_python_client(
        rec.port(), {"--tls", "1.2", "--sni", kHost, "--no-ticket", "--connections", "2"});
    REQUIRE(out.size() == 2);
    RecordedConnection c0 = recorded(rec, 0);
    RecordedConnection c1 = recorded(rec, 1);
    Parsed full = check_recorded("python-tls12-sessionid-full", c0);
    CHECK(full.flight.server_hello->session_id == c0.session_id);
    CHECK(hex_to_bytes(out[0]["session_id"].get<std::string>()) == c0.session_id);
    Parsed resumed = check_recorded("python-tls12-sessionid-resume", c1);
    CHECK(c1.session_reused);
    CHECK(out[1]["reused"] == true);
    CHECK(resumed.hello.session_id == c0.session_id);
    CHECK(resumed.flight.server_hello->session_id == c0.session_id);
  }
}

TEST_CASE("TLS 1.2 resumption by ticket: the parsers find the ticket the server issued",
          "[tls_hello][real]") {
  auto opts = recorder_options(TLS1_2_VERSION, TLS1_2_VERSION, 2);
  opts.tickets = true;
  opts.ticket_key_name = kTicketKeyName;
  const std::vector<uint8_t> key_name(kTicketKeyName.begin(), kTicketKeyName.end());

  SECTION("openssl s_client") {
    TempDir dir;
    TlsRecorder rec(opts);
    run_s_client(rec.port(), SClient("-tls1_2").with_sni(kHost).save_to(dir / "s1.pem"));
    RecordedConnection c0 = recorded(rec, 0);
    run_s_client(rec.port(), SClient("-tls1_2").with_sni(kHost).resume_from(dir / "s1.pem"));
    RecordedConnection c1 = recorded(rec, 1);
    SavedSession saved = read_session_file(dir / "s1.pem");
    REQUIRE_FALSE(saved.ticket.empty());

    Parsed full = check_recorded("openssl-tls12-ticket-full", c0);
    CHECK(full.hello.has_session_ticket);
    CHECK(full.hello.session_ticket.empty());  // asks for a ticket
    CHECK(full.flight.server_hello->session_ticket_acked);
    REQUIRE(full.flight.ticket.has_value());
    CHECK(full.flight.ticket->ticket == saved.ticket);
    CHECK(full.flight.ticket->lifetime_hint == saved.ticket_lifetime_hint);
    REQUIRE(c0.issued_ticket_prefixes.size() == 1);
    CHECK(first_bytes(saved.ticket, 32) == c0.issued_ticket_prefixes[0]);

    Parsed resumed = check_recorded("openssl-tls12-ticket-resume", c1);
    CHECK(c1.session_reused);
    CHECK(resumed.hello.has_session_ticket);
    CHECK(resumed.hello.session_ticket == saved.ticket);
    CHECK(c1.presented_ticket_key_names == std::vector<std::vector<uint8_t>>{key_name});
    // The resuming client makes up a session ID next to the ticket; the
    // server echoes it to say it resumes.
    CHECK(resumed.hello.session_id.size() == kMaxSessionIdBytes);
    CHECK(resumed.flight.server_hello->session_id == resumed.hello.session_id);
  }
  SECTION("Python ssl") {
    TlsRecorder rec(opts);
    auto out =
        run_python_client(rec.port(), {"--tls", "1.2", "--sni", kHost, "--connections", "2"});
    REQUIRE(out.size() == 2);
    RecordedConnection c0 = recorded(rec, 0);
    RecordedConnection c1 = recorded(rec, 1);
    Parsed full = check_recorded("python-tls12-ticket-full", c0);
    REQUIRE(full.flight.ticket.has_value());
    REQUIRE(c0.issued_ticket_prefixes.size() == 1);
    CHECK(first_bytes(full.flight.ticket->ticket, 32) == c0.issued_ticket_prefixes[0]);
    CHECK(out[0]["has_ticket"] == true);
    Parsed resumed = check_recorded("python-tls12-ticket-resume", c1);
    CHECK(c1.session_reused);
    CHECK(out[1]["reused"] == true);
    CHECK(resumed.hello.session_ticket == full.flight.ticket->ticket);
  }
}

TEST_CASE("TLS 1.3 resumption by PSK: the parser finds the identity the server issued",
          "[tls_hello][real]") {
  auto opts = recorder_options(TLS1_3_VERSION, TLS1_3_VERSION, 2);
  opts.ticket_key_name = kTicketKeyName;
  opts.num_tickets = 1;

  SECTION("openssl s_client") {
    TempDir dir;
    TlsRecorder rec(opts);
    run_s_client(rec.port(), SClient("-tls1_3").with_sni(kHost).save_to(dir / "s1.pem"));
    RecordedConnection c0 = recorded(rec, 0);
    run_s_client(rec.port(), SClient("-tls1_3").with_sni(kHost).resume_from(dir / "s1.pem"));
    RecordedConnection c1 = recorded(rec, 1);
    SavedSession saved = read_session_file(dir / "s1.pem");
    REQUIRE_FALSE(saved.ticket.empty());
    REQUIRE(c0.issued_ticket_prefixes.size() == 1);
    CHECK(first_bytes(saved.ticket, 32) == c0.issued_ticket_prefixes[0]);

    Parsed full = check_recorded("openssl-tls13-psk-full", c0);
    CHECK(full.hello.psk_identities.empty());
    Parsed resumed = check_recorded("openssl-tls13-psk-resume", c1);
    CHECK(c1.session_reused);
    REQUIRE(resumed.hello.psk_identities.size() == 1);
    CHECK(resumed.hello.psk_identities[0].identity == saved.ticket);
    CHECK(resumed.hello.extensions.back().type == extension_type::kPreSharedKey);
    CHECK_FALSE(resumed.hello.psk_key_exchange_modes.empty());
    CHECK(resumed.flight.server_hello->selected_psk_identity == 0);
    CHECK(resumed.flight.server_hello->selected_version == version::kTls13);
  }
  SECTION("Python ssl") {
    TlsRecorder rec(opts);
    auto out =
        run_python_client(rec.port(), {"--tls", "1.3", "--sni", kHost, "--connections", "2"});
    REQUIRE(out.size() == 2);
    RecordedConnection c0 = recorded(rec, 0);
    RecordedConnection c1 = recorded(rec, 1);
    check_recorded("python-tls13-psk-full", c0);
    Parsed resumed = check_recorded("python-tls13-psk-resume", c1);
    CHECK(c1.session_reused);
    CHECK(out[1]["reused"] == true);
    REQUIRE(resumed.hello.psk_identities.size() == 1);
    REQUIRE(c0.issued_ticket_prefixes.size() == 1);
    // The ticket is encrypted on the wire; its first 32 bytes (key name and
    // IV) are the ones the server's key callback chose.
    CHECK(first_bytes(resumed.hello.psk_identities[0].identity, 32) ==
          c0.issued_ticket_prefixes[0]);
    CHECK(resumed.hello.psk_identities[0].identity.size() > 32 + 16);
  }
}

TEST_CASE("A HelloRetryRequest is detected, and consumed() points past it", "[tls_hello][real]") {
  auto opts = recorder_options(TLS1_3_VERSION, TLS1_3_VERSION, 1);
  opts.groups = "P-256";  // the client's first key share is X25519
  TlsRecorder rec(opts);
  run_s_client(rec.port(), SClient("-tls1_3").with_sni(kHost).with_groups("X25519:P-256"));
  RecordedConnection c = recorded(rec, 0);
  maybe_dump("openssl-tls13-hrr.client", c.client_bytes);
  maybe_dump("openssl-tls13-hrr.server", c.server_bytes);
  check_split_invariance<ClientHelloParser>(c.client_bytes);
  check_split_invariance<ServerFlightParser>(c.server_bytes);
  check_prefixes<ServerFlightParser>(c.server_bytes);

  ClientOutcome first = parse_client(c.client_bytes);
  REQUIRE(first.status == ParseStatus::Done);
  REQUIRE(first.hello->find_extension(extension_type::kKeyShare) != nullptr);
  ServerOutcome hrr = parse_server(c.server_bytes);
  REQUIRE(hrr.status == ParseStatus::Done);
  CHECK(hrr.server_hello->is_hello_retry_request);
  CHECK(hrr.server_hello->selected_version == version::kTls13);

  // After the HRR the server sends a compatibility CCS, then (answering the
  // second ClientHello) the real ServerHello.
  std::span<const uint8_t> rest = std::span<const uint8_t>(c.server_bytes).subspan(hrr.consumed);
  if (!rest.empty() && rest[0] == content_type::kChangeCipherSpec) rest = rest.subspan(6);
  ServerOutcome real = parse_server(rest);
  REQUIRE(real.status == ParseStatus::Done);
  CHECK_FALSE(real.server_hello->is_hello_retry_request);
  CHECK(real.server_hello->selected_version == version::kTls13);

  // Same on the client side: the second ClientHello follows the first.
  std::span<const uint8_t> crest = std::span<const uint8_t>(c.client_bytes).subspan(first.consumed);
  if (!crest.empty() && crest[0] == content_type::kChangeCipherSpec) crest = crest.subspan(6);
  ClientOutcome second = parse_client(crest);
  REQUIRE(second.status == ParseStatus::Done);
  CHECK(second.hello->server_name == kHost);
  CHECK(second.hello->random == first.hello->random);  // RFC 8446 4.1.2: same random
}

// ================================================================ built hellos

TEST_CASE("A built ClientHello decodes field by field", "[tls_hello]") {
  ClientHelloBuilder b;
  b.session_id.assign(32, 0x5A);
  b.sni("www.example.test")
      .alpn({"h2", "http/1.1"})
      .supported_groups({0x001D, 0x0017})
      .key_share_x25519()
      .supported_versions({0x1A1A, 0x0304, 0x0303})  // GREASE first, as browsers do
      .psk_modes({1})
      .session_ticket({1, 2, 3, 4, 5})
      .early_data()
      .add_extension(0xFAFA, {})  // a GREASE extension: kept, not decoded
      .pre_shared_key({psk({9, 9, 9, 9, 9, 9}, 0x01020304), psk({7}, 7)});
  auto wire = b.records();
  ClientOutcome o = parse_client(wire);
  INFO(describe(o));
  REQUIRE(o.status == ParseStatus::Done);
  const ClientHello& h = *o.hello;
  CHECK(o.consumed == wire.size());
  CHECK(h.record_version == 0x0301);
  CHECK(h.legacy_version == 0x0303);
  CHECK(h.random == b.random);
  CHECK(h.session_id == b.session_id);
  CHECK(h.cipher_suites == b.cipher_suites);
  CHECK(h.compression_methods == std::vector<uint8_t>{0});
  CHECK(h.server_name == "www.example.test");
  CHECK(h.alpn_protocols == std::vector<std::string>{"h2", "http/1.1"});
  CHECK(h.supported_versions == std::vector<uint16_t>{0x1A1A, 0x0304, 0x0303});
  CHECK(h.max_version() == 0x0304);
  CHECK(h.offers_tls13());
  CHECK(h.has_session_ticket);
  CHECK(h.session_ticket == std::vector<uint8_t>{1, 2, 3, 4, 5});
  CHECK(h.early_data);
  CHECK(h.psk_key_exchange_modes == std::vector<uint8_t>{1});
  REQUIRE(h.psk_identities.size() == 2);
  CHECK(h.psk_identities[0].identity == std::vector<uint8_t>{9, 9, 9, 9, 9, 9});
  CHECK(h.psk_identities[0].obfuscated_ticket_age == 0x01020304);
  CHECK(h.psk_identities[1].identity == std::vector<uint8_t>{7});
  REQUIRE(h.extensions.size() == b.extensions.size());
  for (size_t i = 0; i < h.extensions.size(); ++i) {
    CHECK(h.extensions[i].type == b.extensions[i].type);
    auto data = h.extension_data(h.extensions[i]);
    CHECK(std::vector<uint8_t>(data.begin(), data.end()) == b.extensions[i].data);
  }
  CHECK(h.message == b.message());
  maybe_dump("built-tls13-everything.client", wire);
  check_split_invariance<ClientHelloParser>(wire);
  check_prefixes<ClientHelloParser>(wire);
}

TEST_CASE("A ClientHello without extensions and one without supported_versions", "[tls_hello]") {
  ClientHelloBuilder b;
  b.extensions_block = false;
  b.legacy_version = 0x0301;
  ClientOutcome o = parse_client(b.records());
  REQUIRE(o.status == ParseStatus::Done);
  CHECK_FALSE(o.hello->has_extensions_block);
  CHECK(o.hello->max_version() == 0x0301);
  CHECK_FALSE(o.hello->offers_tls13());

  ClientHelloBuilder b2;  // an empty block is allowed too
  ClientOutcome o2 = parse_client(b2.records());
  REQUIRE(o2.status == ParseStatus::Done);
  CHECK(o2.hello->has_extensions_block);
  CHECK(o2.hello->extensions.empty());
}

TEST_CASE("A ClientHello split over several records reassembles to the same hello", "[tls_hello]") {
  ClientHelloBuilder b;
  b.typical_tls13();
  const ClientOutcome one = parse_client(b.records());
  REQUIRE(one.status == ParseStatus::Done);
  // {1}: even the 4-byte handshake header spans four records.
  for (const std::vector<size_t>& frags :
       std::vector<std::vector<size_t>>{{1}, {2}, {3}, {5, 7}, {100}, {4, 1000}}) {
    auto wire = b.records(frags);
    INFO("first fragment " << frags[0]);
    ClientOutcome o = parse_client(wire);
    REQUIRE(o.status == ParseStatus::Done);
    CHECK(o.hello == one.hello);
    CHECK(o.consumed == wire.size());
    check_split_invariance<ClientHelloParser>(wire);
    check_prefixes<ClientHelloParser>(wire);
  }
  maybe_dump("built-tls13-1byte-records.client", b.records({1}));
  maybe_dump("built-tls13-5-7-records.client", b.records({5, 7}));
}

TEST_CASE("Bytes after the ClientHello's records are not consumed", "[tls_hello]") {
  ClientHelloBuilder b;
  b.typical_tls13();
  auto hello = b.records();
  auto wire = hello;
  // A TLS 1.3 client may send a compatibility CCS and early data right away.
  auto ccs = change_cipher_spec_record();
  wire.insert(wire.end(), ccs.begin(), ccs.end());
  ClientHelloParser p;
  REQUIRE(p.feed(wire) == ParseStatus::Done);
  CHECK(p.consumed() == hello.size());
  // Later feeds consume nothing and keep the result.
  CHECK(p.feed(ccs) == ParseStatus::Done);
  CHECK(p.consumed() == hello.size());
}

// ================================================================ malformed ClientHellos

namespace {

struct BadCase {
  std::string name;
  std::vector<uint8_t> wire;
  HelloError error;
  std::optional<uint64_t> offset;  // stream offset, when the test pins it
};

constexpr size_t kRec = kRecordHeaderBytes;  // message offset + kRec = stream offset (one record)

ClientHelloBuilder base() {
  ClientHelloBuilder b;
  b.typical_tls13();
  return b;
}

// The stream offset of extension `index`'s type field in b's single record.
size_t ext_offset(const ClientHelloBuilder& b, size_t index) {
  HelloLayout l;
  b.message(&l);
  return kRec + l.extension_starts.at(index);
}

size_t ext_index(const ClientHelloBuilder& b, uint16_t type) {
  for (size_t i = 0; i < b.extensions.size(); ++i)
    if (b.extensions[i].type == type) return i;
  throw std::logic_error("no such extension");
}

// b with the data of its extension of `type` replaced.
ClientHelloBuilder with_ext_data(uint16_t type, std::vector<uint8_t> data) {
  ClientHelloBuilder b = base();
  b.extensions[ext_index(b, type)].data = std::move(data);
  return b;
}

std::vector<BadCase> bad_client_hellos() {
  std::vector<BadCase> cases;
  auto add = [&](std::string name, std::vector<uint8_t> wire, HelloError e,
                 std::optional<uint64_t> off = {}) {
    cases.push_back({std::move(name), std::move(wire), e, off});
  };
  HelloLayout l;
  base().message(&l);

  add("http-request", to_bytes("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), HelloError::NotHandshakeRecord,
      0);
  add("alert-record", alert_record(2, 40, 0x0301), HelloError::NotHandshakeRecord, 0);
  add("sslv2-hello", {0x80, 0x2E, 0x01, 0x00, 0x02, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10},
      HelloError::SslV2Hello, 0);
  add("sslv2-other", {0x80, 0x2E, 0x04, 0x00, 0x02}, HelloError::NotHandshakeRecord, 0);
  {
    auto w = base().records();
    w[1] = 0x02;
    add("record-version-major", w, HelloError::BadRecordVersion, 1);
    w = base().records();
    w[2] = 0x05;
    add("record-version-minor", w, HelloError::BadRecordVersion, 2);
  }
  add("record-empty", raw_record(22, 0x0301, 0, {}), HelloError::EmptyRecord, 3);
  add("record-too-long", raw_record(22, 0x0301, 16385, base().message()), HelloError::RecordTooLong,
      3);
  {
    auto m = base().message();
    auto w = make_records(22, 0x0301, std::span(m).first(50));
    auto tail = make_records(23, 0x0303, std::span(m).subspan(50));
    w.insert(w.end(), tail.begin(), tail.end());
    add("second-record-appdata", w, HelloError::UnexpectedRecord, 55);
  }
  {
    auto b = base();
    b.handshake_type = 2;
    add("handshake-type-server-hello", b.records(), HelloError::NotClientHello, 5);
  }
  {
    auto b = base();
    b.handshake_length = 70000;
    add("handshake-length-70000", raw_record(22, 0x0301, 200, b.message()),
        HelloError::HandshakeTooLong, 6);
  }
  {
    auto b = base();
    b.handshake_length = 10;  // ends inside the random
    auto m = b.message();
    add("handshake-length-into-random", make_records(22, 0x0301, std::span(m).first(14)),
        HelloError::TruncatedBody, 6);
  }
  {
    auto b = base();
    b.legacy_version = 0x0200;
    add("legacy-version-2", b.records(), HelloError::BadLegacyVersion, kRec + l.legacy_version);
  }
  {
    auto b = base();
    b.session_id_length = 33;
    add("session-id-33", b.records(), HelloError::BadSessionIdLength, kRec + l.session_id_length);
    b = base();
    b.extensions_block = false;
    b.session_id.clear();
    b.cipher_suites = {0x1301};
    b.session_id_length = 32;  // past the end of this short body
    add("session-id-past-end", b.records(), HelloError::BadSessionIdLength,
        kRec + l.session_id_length);
  }
  for (auto [name, len] : {std::pair{"cipher-suites-zero", 0}, std::pair{"cipher-suites-odd", 3},
                           std::pair{"cipher-suites-past-end", 0xFFFE}}) {
    auto b = base();
    b.cipher_suites_length = static_cast<uint16_t>(len);
    add(name, b.records(), HelloError::BadCipherSuitesLength, kRec + l.cipher_suites_length);
  }
  {
    auto b = base();
    b.compression_methods.clear();
    add("compression-zero", b.records(), HelloError::BadCompressionLength,
        kRec + l.compression_length);
    b = base();
    b.extensions_block = false;
    b.compression_length = 5;
    add("compression-past-end", b.records(), HelloError::BadCompressionLength,
        kRec + l.compression_length);
  }
  {
    auto b = base();
    b.extensions_length = static_cast<uint16_t>(b.message().size());  // past the end
    add("extensions-length-long", b.records(), HelloError::BadExtensionsLength,
        kRec + l.extensions_length);
    b = base();
    b.extensions_length = 4;  // short: the rest would be trailing garbage
    add("extensions-length-short", b.records(), HelloError::BadExtensionsLength,
        kRec + l.extensions_length);
    b = base();
    b.extensions.clear();
    b.extensions_block = false;
    b.trailing = {0x00};  // one byte: no room for a 2-byte length
    add("extensions-length-one-byte", b.records(), HelloError::BadExtensionsLength);
  }
  {
    // The block length is right; only the last extension claims a byte more.
    auto b = base();
    b.extensions.back().length_override =
        static_cast<uint16_t>(b.extensions.back().data.size() + 1);
    add("extension-overrun", b.records(), HelloError::ExtensionOverrun,
        ext_offset(b, b.extensions.size() - 1) + 2);
    // A block of 2 bytes: an extension type without its length.
    b = base();
    b.extensions.clear();
    b.extensions_length = 2;
    b.trailing = {0x00, 0x17};
    HelloLayout bl;
    b.message(&bl);
    add("extension-header-cut", b.records(), HelloError::ExtensionOverrun,
        kRec + bl.extensions_length + 2);
  }
  {
    auto b = base();
    b.sni("other.test");  // a second server_name
    add("duplicate-sni", b.records(), HelloError::DuplicateExtension,
        ext_offset(b, b.extensions.size() - 1));
  }
  {
    auto b = with_ext_data(extension_type::kServerName, sni_extension_data(""));
    add("sni-empty-name", b.records(), HelloError::BadSni);
    std::string with_nul = "a";
    with_nul.push_back('\0');
    with_nul += "b.test";
    b = with_ext_data(extension_type::kServerName, sni_extension_data(with_nul));
    add("sni-nul", b.records(), HelloError::BadSni,
        ext_offset(b, ext_index(b, extension_type::kServerName)) + 4 + 2 + 3 + 1);
    b = with_ext_data(extension_type::kServerName, sni_extension_data(std::string(256, 'a')));
    add("sni-256", b.records(), HelloError::BadSni);
    auto d = sni_extension_data("x.test");
    d[1] += 1;  // list length past the data
    b = with_ext_data(extension_type::kServerName, d);
    add("sni-list-length", b.records(), HelloError::BadSni);
    b = with_ext_data(extension_type::kServerName, {});
    add("sni-no-data", b.records(), HelloError::BadSni);
    auto two = sni_extension_data("a.test");
    auto second = sni_extension_data("b.test");
    two.insert(two.end(), second.begin() + 2, second.end());
    two[1] = static_cast<uint8_t>(two.size() - 2);
    b = with_ext_data(extension_type::kServerName, two);
    add("sni-two-host-names", b.records(), HelloError::BadSni);
  }
  {
    auto b = with_ext_data(extension_type::kAlpn, {0x00, 0x00});
    add("alpn-empty-list", b.records(), HelloError::BadAlpn);
    b = with_ext_data(extension_type::kAlpn, {0x00, 0x03, 0x00, 0x01, 'a'});
    add("alpn-empty-protocol", b.records(), HelloError::BadAlpn);
    b = with_ext_data(extension_type::kAlpn, {0x00, 0x03, 0x05, 'a', 'b'});
    add("alpn-protocol-overrun", b.records(), HelloError::BadAlpn);
  }
  {
    auto b = with_ext_data(extension_type::kSupportedVersions, {0x03, 0x03, 0x04, 0x03});
    add("versions-odd", b.records(), HelloError::BadSupportedVersions);
    b = with_ext_data(extension_type::kSupportedVersions, {0x00});
    add("versions-empty", b.records(), HelloError::BadSupportedVersions);
    b = with_ext_data(extension_type::kSupportedVersions, {0x04, 0x03, 0x04});
    add("versions-length-past-data", b.records(), HelloError::BadSupportedVersions);
  }
  {
    auto b = base();
    b.pre_shared_key({psk({1, 2, 3})});
    b.early_data();  // after the PSK
    add("psk-not-last", b.records(), HelloError::PskNotLast,
        ext_offset(b, b.extensions.size() - 1));

    b = base();
    b.add_extension(extension_type::kPreSharedKey, {0x00, 0x00, 0x00, 0x21});
    add("psk-no-identities", b.records(), HelloError::BadPskIdentities);
    b = base();
    b.add_extension(extension_type::kPreSharedKey,
                    psk_extension_data({psk({}, 1), psk({1, 2}, 1)}));
    add("psk-empty-identity", b.records(), HelloError::BadPskIdentities);
    b = base();
    b.add_extension(extension_type::kPreSharedKey,
                    psk_extension_data({psk({1, 2, 3})}, std::vector<size_t>{31}));
    add("psk-binder-31", b.records(), HelloError::BadPskBinders);
    b = base();
    b.add_extension(extension_type::kPreSharedKey,
                    psk_extension_data({psk({1, 2, 3})}, std::vector<size_t>{32, 32}));
    add("psk-binder-count", b.records(), HelloError::BadPskBinders);
    b = base();
    auto d = psk_extension_data({psk({1, 2, 3})});
    d.push_back(0);  // a byte after the binders
    b.add_extension(extension_type::kPreSharedKey, d);
    add("psk-trailing", b.records(), HelloError::BadPskBinders);
    b = base();
    d = psk_extension_data({psk({1, 2, 3})});
    d[1] = 0xF0;  // identities length past the extension
    b.add_extension(extension_type::kPreSharedKey, d);
    add("psk-identities-overrun", b.records(), HelloError::BadPskIdentities);
  }
  {
    auto b = with_ext_data(extension_type::kPskKeyExchangeModes, {0x00});
    add("psk-modes-empty", b.records(), HelloError::BadPskModes);
    b = with_ext_data(extension_type::kPskKeyExchangeModes, {0x02, 0x01});
    add("psk-modes-length", b.records(), HelloError::BadPskModes);
  }
  {
    auto b = base();
    b.add_extension(extension_type::kEarlyData, {0x00});
    add("early-data-not-empty", b.records(), HelloError::BadEarlyData);
  }
  {
    auto b = base();
    auto m = b.message();
    m.push_back(0x16);  // a byte after the hello, inside its record
    add("trailing-byte-in-record", make_records(22, 0x0301, m), HelloError::TrailingBytes,
        kRec + m.size() - 1);
  }
  {
    // A valid 40 KiB hello in 1-byte records: 6 stream bytes per byte.
    auto b = base();
    b.add_extension(0x0015, std::vector<uint8_t>(40000, 0));  // padding
    add("too-large-1-byte-records", b.records({1}), HelloError::TooLarge, kMaxHelloBytes);
    // A hello that fits in full records but not in 100-byte ones.
    auto big = base();
    big.add_extension(0x0015, std::vector<uint8_t>(65000, 0));
    add("too-large-100-byte-records", big.records({100}), HelloError::TooLarge, kMaxHelloBytes);
  }
  return cases;
}

}  // namespace

TEST_CASE("Each malformed ClientHello gives its own error, at its offset, however it is split",
          "[tls_hello]") {
  for (const BadCase& c : bad_client_hellos()) {
    INFO("case " << c.name);
    maybe_dump("bad-" + c.name + ".client", c.wire);
    ClientOutcome o = parse_client(c.wire);
    INFO("got " << describe(o));
    CHECK(o.status == ParseStatus::Error);
    CHECK(o.error == c.error);
    if (c.offset) CHECK(o.error_offset == *c.offset);
    CHECK(o.error_offset <= c.wire.size());
    check_split_invariance<ClientHelloParser>(c.wire);
  }
}

TEST_CASE("Every truncation of a ClientHello answers NeedMore", "[tls_hello]") {
  ClientHelloBuilder b;
  b.typical_tls13();
  b.session_ticket(std::vector<uint8_t>(100, 0x42));
  b.pre_shared_key({psk(std::vector<uint8_t>(120, 0x43), 5)});
  for (const std::vector<size_t>& frags : std::vector<std::vector<size_t>>{{16384}, {7}, {64, 3}}) {
    auto wire = b.records(frags);
    check_prefixes<ClientHelloParser>(wire);
  }
}

TEST_CASE("The ClientHello caps: the biggest hello that fits is Done", "[tls_hello]") {
  // 65 000 bytes of padding: a message of about 65 200 bytes that fits, with
  // its four record headers, in 64 KiB of stream.
  ClientHelloBuilder b;
  b.typical_tls13();
  b.add_extension(0x0015, std::vector<uint8_t>(65000, 0));
  auto wire = b.records();
  REQUIRE(wire.size() <= kMaxHelloBytes);
  ClientOutcome o = parse_client(wire);
  REQUIRE(o.status == ParseStatus::Done);
  CHECK(o.consumed == wire.size());
  check_split_invariance<ClientHelloParser>(wire);
}

// ================================================================ server flights

namespace {

std::vector<uint8_t> cat(std::initializer_list<std::vector<uint8_t>> parts) {
  std::vector<uint8_t> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

std::vector<uint8_t> hs_records(const std::vector<uint8_t>& messages,
                                std::vector<size_t> frags = {16384}) {
  return make_records(22, 0x0303, messages, frags);
}

std::vector<uint8_t> skipped_message(uint8_t type, size_t body_size) {
  return handshake_message(type, std::vector<uint8_t>(body_size, 0xCE));
}

ServerHelloBuilder tls12_hello() {
  ServerHelloBuilder b;
  b.session_id.assign(32, 0x33);
  b.session_ticket_ack();
  b.alpn("http/1.1");
  return b;
}

}  // namespace

TEST_CASE("A TLS 1.3 ServerHello ends the flight at its record", "[tls_hello]") {
  ServerHelloBuilder b;
  b.cipher_suite = 0x1301;
  b.session_id.assign(32, 0x5A);
  b.selected_version(version::kTls13);
  auto sh = b.records();
  // What follows is the compatibility CCS and encrypted records.
  auto wire = cat(
      {sh, change_cipher_spec_record(), raw_record(23, 0x0303, 3, std::vector<uint8_t>{1, 2, 3})});
  ServerOutcome o = parse_server(wire);
  REQUIRE(o.status == ParseStatus::Done);
  CHECK(o.consumed == sh.size());
  CHECK(o.server_hello->selected_version == version::kTls13);
  CHECK(o.server_hello->has_supported_versions);
  CHECK(o.server_hello->session_id == b.session_id);
  CHECK(o.server_hello->cipher_suite == 0x1301);
  CHECK_FALSE(o.server_hello->is_hello_retry_request);
  CHECK(o.server_hello->message == b.message());
  maybe_dump("built-tls13-server-hello.server", wire);
  check_split_invariance<ServerFlightParser>(wire);
  check_prefixes<ServerFlightParser>(wire);

  ServerHelloBuilder hrr;
  hrr.hello_retry_request();
  ServerOutcome h = parse_server(hrr.records());
  REQUIRE(h.status == ParseStatus::Done);
  CHECK(h.server_hello->is_hello_retry_request);
  maybe_dump("built-hrr.server", hrr.records());
}

TEST_CASE("A TLS 1.2 server flight: ServerHello first, ticket in the second flight, Done at CCS",
          "[tls_hello]") {
  auto hello = tls12_hello();
  std::vector<uint8_t> ticket(180);
  for (size_t i = 0; i < ticket.size(); ++i) ticket[i] = static_cast<uint8_t>(i);
  // A 40 000-byte Certificate spans three records and is skipped unbuffered.
  auto flight1 =
      hs_records(cat({hello.message(), skipped_message(handshake_type::kCertificate, 40000),
                      skipped_message(handshake_type::kServerKeyExchange, 300),
                      skipped_message(handshake_type::kServerHelloDone, 0)}));
  auto flight2 =
      cat({hs_records(new_session_ticket_message(7200, ticket)), change_cipher_spec_record(),
           raw_record(22, 0x0303, 40, std::vector<uint8_t>(40, 0xEE))});  // encrypted Finished

  ServerFlightParser p;
  CHECK(p.feed(flight1) == ParseStatus::NeedMore);
  REQUIRE(p.has_server_hello());  // usable before the flight ends
  CHECK(p.server_hello().session_id == hello.session_id);
  CHECK(p.server_hello().session_ticket_acked);
  CHECK(p.server_hello().alpn_protocol == "http/1.1");
  CHECK(p.server_hello().selected_version == version::kTls12);
  CHECK_FALSE(p.new_session_ticket());
  CHECK(p.feed(flight2) == ParseStatus::Done);
  REQUIRE(p.new_session_ticket());
  CHECK(p.new_session_ticket()->lifetime_hint == 7200);
  CHECK(p.new_session_ticket()->ticket == ticket);
  CHECK(p.consumed() == flight1.size() + flight2.size() - 45);

  auto wire = cat({flight1, flight2});
  maybe_dump("built-tls12-full-flight.server", wire);
  check_split_invariance<ServerFlightParser>(wire);
  check_prefixes<ServerFlightParser>(wire);

  // Messages packed several per record, and split one byte per record.
  auto packed =
      cat({hs_records(cat({hello.message(), skipped_message(handshake_type::kCertificate, 500),
                           skipped_message(handshake_type::kServerHelloDone, 0),
                           new_session_ticket_message(1, ticket)}),
                      {1}),
           change_cipher_spec_record()});
  ServerOutcome o = parse_server(packed);
  REQUIRE(o.status == ParseStatus::Done);
  CHECK(o.ticket->ticket == ticket);
  CHECK(o.consumed == packed.size());
  check_split_invariance<ServerFlightParser>(packed);
}

TEST_CASE("Server flight caps: skipped messages are not bounded by the buffer, the stream is",
          "[tls_hello]") {
  auto hello = tls12_hello();
  auto fits =
      cat({hs_records(cat({hello.message(), skipped_message(handshake_type::kCertificate, 200000),
                           skipped_message(handshake_type::kServerHelloDone, 0)})),
           change_cipher_spec_record()});
  ServerOutcome o = parse_server(fits);
  CHECK(o.status == ParseStatus::Done);
  auto too_big =
      hs_records(cat({hello.message(), skipped_message(handshake_type::kCertificate, 300000)}));
  o = parse_server(too_big);
  CHECK(o.status == ParseStatus::Error);
  CHECK(o.error == HelloError::TooLarge);
  CHECK(o.error_offset == kMaxServerFlightBytes);
}

namespace {

std::vector<BadCase> bad_server_flights() {
  std::vector<BadCase> cases;
  auto add = [&](std::string name, std::vector<uint8_t> wire, HelloError e,
                 std::optional<uint64_t> off = {}) {
    cases.push_back({std::move(name), std::move(wire), e, off});
  };
  auto hello = tls12_hello();
  auto sh = hs_records(hello.message());

  add("http-response", to_bytes("HTTP/1.1 400 Bad Request\r\n\r\n"), HelloError::NotHandshakeRecord,
      0);
  add("alert-first", alert_record(2, 40), HelloError::Alert, 0);
  add("ccs-first", change_cipher_spec_record(), HelloError::UnexpectedRecord, 0);
  add("appdata-first", raw_record(23, 0x0303, 2, std::vector<uint8_t>{1, 2}),
      HelloError::UnexpectedRecord, 0);
  add("certificate-first", hs_records(skipped_message(handshake_type::kCertificate, 10)),
      HelloError::NotServerHello, 5);
  {
    auto b = tls12_hello();
    b.handshake_length = 70000;
    add("server-hello-70000", raw_record(22, 0x0303, 100, b.message()),
        HelloError::HandshakeTooLong, 6);
  }
  add("alert-after-hello", cat({sh, alert_record(2, 80)}), HelloError::Alert, sh.size());
  {
    auto m = cat({hello.message(), skipped_message(handshake_type::kCertificate, 100)});
    auto w = hs_records(std::vector<uint8_t>(m.begin(), m.end() - 50));
    add("ccs-inside-message", cat({w, change_cipher_spec_record()}), HelloError::UnexpectedRecord,
        w.size());
  }
  {
    auto b = ServerHelloBuilder();  // no ticket ack
    add("ticket-without-ack",
        hs_records(cat({b.message(), new_session_ticket_message(1, std::vector<uint8_t>{1})})),
        HelloError::UnexpectedMessage, kRec + b.message().size());
  }
  add("two-tickets",
      hs_records(cat({hello.message(), new_session_ticket_message(1, std::vector<uint8_t>{1}),
                      new_session_ticket_message(1, std::vector<uint8_t>{2})})),
      HelloError::UnexpectedMessage);
  add("certificate-after-done",
      hs_records(cat({hello.message(), skipped_message(handshake_type::kServerHelloDone, 0),
                      skipped_message(handshake_type::kCertificate, 4)})),
      HelloError::UnexpectedMessage);
  add("second-server-hello", hs_records(cat({hello.message(), hello.message()})),
      HelloError::UnexpectedMessage, kRec + hello.message().size());
  add("client-hello-in-flight", hs_records(cat({hello.message(), ClientHelloBuilder().message()})),
      HelloError::UnexpectedMessage);
  {
    auto nst = new_session_ticket_message(1, std::vector<uint8_t>(10, 1));
    nst[9] = 0x20;  // ticket length past the message
    add("ticket-length-past-end", hs_records(cat({hello.message(), nst})),
        HelloError::BadNewSessionTicket);
  }
  {
    auto b = tls12_hello();
    b.extensions.clear();
    b.selected_version(0x0303);
    add("supported-versions-tls12", b.records(), HelloError::BadSupportedVersions);
    b = tls12_hello();
    b.extensions.clear();
    b.add_extension(extension_type::kSupportedVersions, {0x03, 0x04, 0x00});
    add("supported-versions-3-bytes", b.records(), HelloError::BadSupportedVersions);
    b = tls12_hello();
    b.extensions.clear();
    b.add_extension(extension_type::kSessionTicket, {1});
    add("ticket-ack-not-empty", b.records(), HelloError::BadSessionTicket);
    b = tls12_hello();
    b.extensions.clear();
    b.add_extension(extension_type::kAlpn, alpn_extension_data({"h2", "http/1.1"}));
    add("alpn-two-protocols", b.records(), HelloError::BadAlpn);
    b = tls12_hello();
    b.legacy_version = 0x0304;
    b.extensions.clear();
    add("legacy-version-1.3-without-extension", b.records(), HelloError::BadLegacyVersion,
        kRec + 4);
    b = tls12_hello();
    b.session_id_length = 33;
    add("server-session-id-33", b.records(), HelloError::BadSessionIdLength, kRec + 4 + 2 + 32);
    b = tls12_hello();
    b.add_extension(extension_type::kAlpn, alpn_extension_data({"x"}));
    add("server-duplicate-extension", b.records(), HelloError::DuplicateExtension);
  }
  {
    ServerHelloBuilder b;
    b.selected_version(version::kTls13);
    auto m = cat({b.message(), skipped_message(8, 2)});  // EncryptedExtensions in the same record
    add("tls13-hello-not-alone", hs_records(m), HelloError::TrailingBytes,
        kRec + b.message().size());
  }
  {
    auto ccs = change_cipher_spec_record();
    ccs[5] = 2;
    add("ccs-value-2", cat({sh, ccs}), HelloError::BadChangeCipherSpec, sh.size() + 5);
    add("ccs-length-2", cat({sh, raw_record(20, 0x0303, 2, std::vector<uint8_t>{1, 1})}),
        HelloError::BadChangeCipherSpec, sh.size() + 3);
    add("alert-level-3", alert_record(3, 40), HelloError::BadAlert, 5);
    add("alert-length-3", raw_record(21, 0x0303, 3, std::vector<uint8_t>{2, 40, 0}),
        HelloError::BadAlert, 3);
  }
  return cases;
}

}  // namespace

TEST_CASE("Each malformed server flight gives its own error, however it is split", "[tls_hello]") {
  for (const BadCase& c : bad_server_flights()) {
    INFO("case " << c.name);
    maybe_dump("bad-" + c.name + ".server", c.wire);
    ServerOutcome o = parse_server(c.wire);
    INFO("got " << describe(o));
    CHECK(o.status == ParseStatus::Error);
    CHECK(o.error == c.error);
    if (c.offset) CHECK(o.error_offset == *c.offset);
    check_split_invariance<ServerFlightParser>(c.wire);
  }
  // The alert itself is reported.
  ServerOutcome a = parse_server(alert_record(2, 40));
  REQUIRE(a.alert.has_value());
  CHECK(a.alert->level == 2);
  CHECK(a.alert->description == 40);
}

TEST_CASE("Error codes have distinct names", "[tls_hello]") {
  std::vector<std::string_view> names;
#define EDGEPIN_TEST_NAME(name, str) names.push_back(to_string(HelloError::name));
  EDGEPIN_TLS_HELLO_ERRORS(EDGEPIN_TEST_NAME)
#undef EDGEPIN_TEST_NAME
  CHECK(names.size() == kHelloErrorCount);
  std::sort(names.begin(), names.end());
  CHECK(std::adjacent_find(names.begin(), names.end()) == names.end());
  CHECK(to_string(HelloError::PskNotLast) == "psk_not_last");
}

// ================================================================ corpus

TEST_CASE("Every fuzz corpus file gives the same result however it is split",
          "[tls_hello][corpus]") {
  size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(kCorpusDir)) {
    if (!e.is_regular_file()) continue;
    auto bytes = read_file(e.path());
    INFO("corpus file " << e.path().filename());
    check_split_invariance<ClientHelloParser>(bytes);
    check_split_invariance<ServerFlightParser>(bytes);
    // Recorded and built valid streams are named for their direction.
    std::string name = e.path().filename().string();
    if (name.rfind("bad-", 0) != 0) {
      if (name.ends_with(".client")) CHECK(parse_client(bytes).status == ParseStatus::Done);
      if (name.ends_with(".server")) CHECK(parse_server(bytes).status == ParseStatus::Done);
    }
    ++files;
  }
  CHECK(files >= 20);
}
