// Fuzz target for common/tls_hello: the input is fed to a ClientHelloParser
// and to a ServerFlightParser, each time whole, one byte at a time (small
// inputs), and in pieces whose boundaries come from the input itself (as
// h2o's drivers split requests, so fragmentation is fuzzed too). Any
// difference between the outcomes, or a broken invariant, aborts.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <span>
#include <vector>

#include "tls_hello.h"

namespace {

using edgepin::ParseStatus;
using namespace edgepin::tls;

// Byte-by-byte feeding costs a call per byte; past this size the two other
// schedules cover fragmentation.
constexpr size_t kMaxBytewiseInput = 8192;

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
  ServerOutcome o{p.status(),   p.error(),    p.error_offset(),
                  p.consumed(), std::nullopt, p.new_session_ticket(),
                  p.alert()};
  if (p.has_server_hello()) o.server_hello = p.server_hello();
  return o;
}

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "tls_hello_fuzz: %s\n", what);
  std::abort();
}

// Feeds the pieces [cuts[k], cuts[k+1]) in order.
template <typename Parser>
auto run(std::span<const uint8_t> in, const std::vector<size_t>& cuts) {
  Parser p;
  size_t prev = 0;
  for (size_t c : cuts) {
    p.feed(in.subspan(prev, c - prev));
    prev = c;
  }
  p.feed(in.subspan(prev));
  return outcome_of(p);
}

template <typename Outcome>
void check_invariants(const Outcome& o, size_t size) {
  if (o.status == ParseStatus::NeedMore && o.consumed != size)
    die("NeedMore without consuming all input");
  if (o.status == ParseStatus::Done && o.consumed > size) die("consumed past the input");
  if (o.status == ParseStatus::Error && o.error == HelloError::None) die("Error without a code");
  if (o.status != ParseStatus::Error && o.error != HelloError::None) die("code without Error");
}

// FNV-1a: a stable seed derived from the input.
uint64_t fnv1a(std::span<const uint8_t> in) {
  uint64_t h = 1469598103934665603ull;
  for (uint8_t b : in) h = (h ^ b) * 1099511628211ull;
  return h;
}

template <typename Parser>
void check_parser(std::span<const uint8_t> in) {
  const auto whole = run<Parser>(in, {});
  check_invariants(whole, in.size());

  if (in.size() <= kMaxBytewiseInput) {
    std::vector<size_t> every;
    for (size_t i = 1; i < in.size(); ++i) every.push_back(i);
    if (!(run<Parser>(in, every) == whole)) die("byte-by-byte result differs from whole");
  }

  // Pieces of 1..64 bytes, sizes drawn from a generator seeded by the input.
  std::vector<size_t> cuts;
  uint64_t x = fnv1a(in) | 1;
  for (size_t pos = 0;;) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    pos += 1 + x % 64;
    if (pos >= in.size()) break;
    cuts.push_back(pos);
  }
  if (!(run<Parser>(in, cuts) == whole)) die("random split result differs from whole");

  // Cuts right before each 0x16 (the handshake content type), where record
  // boundaries tend to be.
  std::vector<size_t> at_marker;
  for (size_t i = 1; i < in.size(); ++i)
    if (in[i] == content_type::kHandshake) at_marker.push_back(i);
  if (!(run<Parser>(in, at_marker) == whole)) die("marker split result differs from whole");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> in(data, size);
  check_parser<ClientHelloParser>(in);
  check_parser<ServerFlightParser>(in);
  return 0;
}
