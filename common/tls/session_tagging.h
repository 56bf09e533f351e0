#pragma once
// Node-tagged TLS resumption on the server side: the node's ticket keys,
// and the OpenSSL callbacks that put the node tag into every session ID and
// every ticket the node issues (docs/stickiness.md, "The node's side:
// session IDs and ticket keys"). Shared by edgepin-node-proxy and the
// integration tests' backend.
//
// OpenSSL 3.0 facts this relies on (checked by tests/unit/common/
// test_session_tagging.cpp):
// - Tickets, TLS 1.2 and TLS 1.3 alike, are sealed and opened by the
//   callback set with SSL_CTX_set_tlsext_ticket_key_evp_cb. The 16-byte key
//   name it writes starts the ticket, so it starts the TLS 1.2 SessionTicket
//   extension and the TLS 1.3 pre_shared_key identity of a resuming client.
//   OpenSSL appends the IV, the AES-256-CBC ciphertext of the session and an
//   HMAC-SHA256 over all of it.
// - TLS 1.2 session IDs come from SSL_CTX_set_generate_session_id. OpenSSL
//   offers 32 bytes, rejects a result of length 0 or a callback returning 0
//   (the handshake then fails), and rejects an ID already in the session
//   cache; the callback checks SSL_has_matching_session_id and draws again.
// - A TLS 1.2 server that issues a ticket sends an empty session ID in its
//   ServerHello; the OpenSSL client then invents a session ID (a hash of the
//   ticket) that it sends beside the ticket when resuming. That ID is not
//   tagged: the lb must let the ticket win.
// - A TLS 1.3 server with SSL_OP_NO_TICKET sends stateful tickets whose PSK
//   identity is the session ID (32 bytes, made by generate_session_id): it
//   carries the tag in the session-ID layout, not the key-name layout.
// - OpenSSL calls the ticket callback of the context the SSL object was
//   created from (its "session context"), also after an SNI callback switched
//   it to another context with SSL_set_SSL_CTX. The callbacks here find their
//   state through SSL_get_SSL_CTX, i.e. the switched context: install the
//   tagging, with the same ring, on every context a connection can end up on.
#include <openssl/ssl.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <span>
#include <string_view>
#include <vector>

#include "node_tag.h"
#include "random.h"

namespace edgepin::tagging {

// AES-256-CBC key and HMAC-SHA256 key of one ticket key.
inline constexpr size_t kTicketAesKeySize = 32;
inline constexpr size_t kTicketHmacKeySize = 32;
// A new key name that clashes with a key still held is drawn again, at most
// this many times; 32 random bits make even one clash a 2^-32 event, so
// running out means the random source is broken.
inline constexpr size_t kMaxKeyNameDraws = 8;
// Same for a session ID already in the session cache (128 random bits).
inline constexpr size_t kMaxSessionIdDraws = 8;
// Hard cap on the keys held, whatever the grace period: rotate() called in a
// loop must not grow the ring (and the decrypt-side scan) without bound.
inline constexpr size_t kMaxTicketKeys = 64;

using Clock = std::chrono::steady_clock;

struct TicketKey {
  std::array<uint8_t, nodetag::kKeyNameSize> name{};
  std::array<uint8_t, kTicketAesKeySize> aes_key{};
  std::array<uint8_t, kTicketHmacKeySize> hmac_key{};
  nodetag::Epoch epoch = 0;
  Clock::time_point created_at{};

  TicketKey() = default;
  TicketKey(const TicketKey&) = default;
  TicketKey& operator=(const TicketKey&) = default;
  // Wipes the secrets (OPENSSL_cleanse), also in every copy.
  ~TicketKey();
};

struct TicketKeyRingOptions {
  // maybe_rotate() makes a new current key when the current one is this old.
  std::chrono::seconds rotate_interval{std::chrono::hours(1)};
  // How long a key still decrypts after it stopped being current. Tickets
  // are sealed only with the current key, so a grace period at least as
  // long as the ticket lifetime (SSL_CTX_set_timeout) lets every ticket
  // resume until it expires. Zero drops a key as soon as it is replaced.
  std::chrono::seconds grace_period{std::chrono::hours(2)};
  // Keys held at most (current included), 1..kMaxTicketKeys; the oldest
  // retired key goes first when the cap is reached.
  size_t max_keys = 16;
};

// Ticket outcomes, counted per ring (so per node, across its contexts and
// worker threads). The X-macro names each counter once.
#define EDGEPIN_TAGGING_COUNTERS(X)                                                            \
  X(session_ids_issued, "session_ids_issued")                                                  \
  X(session_id_clashes, "session_id_clashes")   /* drawn again: already in the cache */        \
  X(session_id_failures, "session_id_failures") /* callback returned 0 */                      \
  X(tickets_sealed, "tickets_sealed")                                                          \
  X(tickets_opened, "tickets_opened")           /* with the current key */                     \
  X(tickets_renewed, "tickets_renewed")         /* with a retired key: a new ticket follows */ \
  X(tickets_unknown_key, "tickets_unknown_key") /* full handshake */                           \
  X(ticket_failures, "ticket_failures")         /* RAND or EVP failure: no ticket */

struct TaggingCounters {
#define EDGEPIN_X(name, text) std::atomic<uint64_t> name{0};
  EDGEPIN_TAGGING_COUNTERS(EDGEPIN_X)
#undef EDGEPIN_X
};

#define EDGEPIN_TICKET_ROTATE_OUTCOMES(X)                                          \
  X(Rotated, "rotated")                                                            \
  X(NotDue, "not_due")             /* maybe_rotate: current key is young enough */ \
  X(RandomFailed, "random_failed") /* the random source failed; ring unchanged */  \
  X(NameClash, "name_clash")       /* kMaxKeyNameDraws clashing names; ring unchanged */

enum class RotateOutcome : uint8_t {
#define EDGEPIN_X(name, text) name,
  EDGEPIN_TICKET_ROTATE_OUTCOMES(EDGEPIN_X)
#undef EDGEPIN_X
};

constexpr std::string_view to_string(RotateOutcome o) {
  switch (o) {
#define EDGEPIN_X(name, text) \
  case RotateOutcome::name:   \
    return text;
    EDGEPIN_TICKET_ROTATE_OUTCOMES(EDGEPIN_X)
#undef EDGEPIN_X
  }
  return "?";
}

// The ticket keys of one node: one current key that seals new tickets, and
// retired keys that still open tickets during their grace period. Key names
// are nodetag::encode_key_name(tag, epoch) with epoch = 1 for the first key and
// +1 per rotation. Thread-safe: the ticket callbacks of every worker thread
// read it under a shared lock while one timer thread rotates it.
class TicketKeyRing {
 public:
  // Makes a ring with its first key (epoch 1) created at `now`. `random`
  // supplies key names and key material (RAND_bytes by default; tests
  // inject failures and clashes). Returns nullptr if `tag` is 0, the
  // options are out of range (rotate_interval <= 0, grace_period < 0,
  // max_keys outside 1..kMaxTicketKeys), or the first key cannot be made.
  static std::shared_ptr<TicketKeyRing> create(nodetag::Tag tag, TicketKeyRingOptions options,
                                               Clock::time_point now,
                                               nodetag::RandomSource random = tls::openssl_random);

  TicketKeyRing(const TicketKeyRing&) = delete;
  TicketKeyRing& operator=(const TicketKeyRing&) = delete;

  // Makes a new current key (epoch + 1), retires the previous one at `now`,
  // and drops the retired keys whose grace period has passed at `now`
  // (retired at least grace_period ago) and the oldest ones beyond max_keys. Returns Rotated, or
  // RandomFailed/NameClash with the ring left as it was (the current key keeps sealing).
  RotateOutcome rotate(Clock::time_point now);

  // rotate(now) if the current key is at least rotate_interval old.
  // Otherwise drops the retired keys whose grace period has passed and
  // returns NotDue. The ring never looks at the clock by itself: call this
  // from a timer, whose period is then the resolution of both the rotation
  // and the grace period.
  RotateOutcome maybe_rotate(Clock::time_point now);

  // The key that seals new tickets.
  TicketKey current() const;
  nodetag::Epoch current_epoch() const;

  struct Match {
    TicketKey key;
    bool current = false;  // false: a retired key, the ticket should be renewed
  };
  // The key named `name`; std::nullopt if the ring holds no such key (never
  // had it, or dropped it after its grace period).
  std::optional<Match> find(std::span<const uint8_t, nodetag::kKeyNameSize> name) const;

  nodetag::Tag tag() const { return tag_; }
  const TicketKeyRingOptions& options() const { return options_; }
  // The random source given to create(); the session-ID callback draws the
  // random part of every session ID from it too, from any worker thread
  // (opensslRandom is thread-safe; an injected source must be as well).
  const nodetag::RandomSource& random() const { return random_; }
  // Keys held, current included.
  size_t size() const;
  TaggingCounters& counters() { return counters_; }
  const TaggingCounters& counters() const { return counters_; }

 private:
  struct Entry {
    TicketKey key;
    Clock::time_point retired_at{};  // meaningful for every entry but the last
  };

  TicketKeyRing(nodetag::Tag tag, TicketKeyRingOptions options, nodetag::RandomSource random);
  // Draws a key for `epoch` whose name no held key has; needs the lock held
  // exclusively (it reads keys_). nullopt with the reason in `outcome`.
  std::optional<TicketKey> make_key(nodetag::Epoch epoch, Clock::time_point now,
                                    RotateOutcome& outcome);
  // Needs the lock held exclusively.
  void drop_expired_locked(Clock::time_point now);

  const nodetag::Tag tag_;
  const TicketKeyRingOptions options_;
  const nodetag::RandomSource random_;
  mutable std::shared_mutex mutex_;
  std::vector<Entry> keys_;  // oldest first; back() is current, never empty
  TaggingCounters counters_;
};

#define EDGEPIN_TAGGING_INSTALL_ERRORS(X)                                                   \
  X(None, "none")                                                                           \
  X(InvalidTag, "invalid_tag")               /* tag 0 */                                    \
  X(NoKeyRing, "no_key_ring")                /* ring is null */                             \
  X(TagMismatch, "tag_mismatch")             /* ring->tag() != tag */                       \
  X(CipherUnavailable, "cipher_unavailable") /* AES-256-CBC cannot be fetched */            \
  X(ExDataFailed, "ex_data_failed")          /* no ex_data index, or it could not be set */ \
  X(CallbackRejected, "callback_rejected")   /* OpenSSL refused a callback */

enum class InstallError : uint8_t {
#define EDGEPIN_X(name, text) name,
  EDGEPIN_TAGGING_INSTALL_ERRORS(EDGEPIN_X)
#undef EDGEPIN_X
};

constexpr std::string_view to_string(InstallError e) {
  switch (e) {
#define EDGEPIN_X(name, text) \
  case InstallError::name:    \
    return text;
    EDGEPIN_TAGGING_INSTALL_ERRORS(EDGEPIN_X)
#undef EDGEPIN_X
  }
  return "?";
}

// Makes `ctx` issue node-tagged resumption data: session IDs are
// nodetag::encode_session_id(tag, ring's current epoch) and tickets are sealed
// and opened with the ring's keys (key name = nodetag::encodeKeyName). The
// context keeps a reference to the ring (in its ex_data) until it is freed;
// calling this again on the same context replaces the previous installation.
// Whether tickets and the session cache are used at all stays the caller's
// choice (SSL_OP_NO_TICKET, SSL_CTX_set_session_cache_mode).
// Ticket callback outcomes: sealing a ticket without a usable key or on a
// RAND/EVP failure sends no ticket (TLS 1.2: an empty one); opening a ticket
// with the current key resumes, with a retired key resumes and renews the
// ticket, with an unknown key (or on an EVP failure) falls back to a full
// handshake. Returns None, or the reason nothing was installed (the context
// is then unchanged).
InstallError install_node_tagging(SSL_CTX* ctx, nodetag::Tag tag,
                                  std::shared_ptr<TicketKeyRing> ring);

// The ring installed on `ctx`, or nullptr.
std::shared_ptr<TicketKeyRing> installed_ring(const SSL_CTX* ctx);

}  // namespace edgepin::tagging
