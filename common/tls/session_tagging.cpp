#include "session_tagging.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include <algorithm>
#include <cstddef>
#include <mutex>
#include <utility>

#include "ssl_ptr.h"

namespace edgepin::tagging {
namespace {

using EvpCipherPtr = std::unique_ptr<EVP_CIPHER, CDeleter<EVP_CIPHER_free>>;

// RFC 5077's recommended construction, which OpenSSL's built-in ticket keys
// also use: AES-256-CBC, then HMAC-SHA256 over key name, IV and ciphertext.
constexpr const char* kTicketCipher = "AES-256-CBC";
constexpr const char* kTicketDigest = "SHA256";

// What a context needs in its ticket and session-ID callbacks. Owned by the
// context's ex_data slot; freed by OpenSSL through free_state().
struct TaggingState {
  nodetag::Tag tag = nodetag::kInvalidTag;
  std::shared_ptr<TicketKeyRing> ring;
  // Fetched once: an implicit fetch per ticket (EVP_aes_256_cbc()) takes the
  // provider store's lock on every handshake.
  EvpCipherPtr cipher;
};

void free_state(void* /*parent*/, void* ptr, CRYPTO_EX_DATA* /*ad*/, int /*idx*/, long /*argl*/,
                void* /*argp*/) {
  delete static_cast<TaggingState*>(ptr);
}

// One ex_data index for the whole process, made on first use; -1 if OpenSSL
// could not allocate it. Each context has its own slot, so two contexts with
// different tags and rings in one process never see each other's state.
int state_index() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, free_state);
  return index;
}

TaggingState* state_of(const SSL_CTX* ctx) {
  const int index = state_index();
  if (ctx == nullptr || index < 0) return nullptr;
  return static_cast<TaggingState*>(SSL_CTX_get_ex_data(ctx, index));
}

TaggingState* state_of(const SSL* ssl) { return state_of(SSL_get_SSL_CTX(ssl)); }

bool fill_random(const nodetag::RandomSource& random, std::span<uint8_t> out) {
  return random && random(out);
}

// Keys the HMAC. libssl hands us an EVP_MAC_CTX of the HMAC algorithm; the
// digest and the key are ours to set.
bool init_mac(EVP_MAC_CTX* hctx, const TicketKey& key) {
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, const_cast<char*>(kTicketDigest), 0),
      OSSL_PARAM_construct_end(),
  };
  return EVP_MAC_init(hctx, key.hmac_key.data(), key.hmac_key.size(), params) == 1;
}

// SSL_CTX_set_generate_session_id callback. OpenSSL passes the length it
// wants in *id_len (32 for TLS) and fails the handshake if we return 0.
int generate_session_id(SSL* ssl, unsigned char* id, unsigned int* id_len) {
  TaggingState* state = state_of(ssl);
  if (state == nullptr) return 0;
  TaggingCounters& counters = state->ring->counters();
  if (id == nullptr || id_len == nullptr || *id_len < nodetag::kSessionIdSize) {
    counters.session_id_failures.fetch_add(1, std::memory_order_relaxed);
    return 0;
  }
  const nodetag::Epoch epoch = state->ring->current_epoch();
  for (size_t draw = 0; draw < kMaxSessionIdDraws; ++draw) {
    auto encoded = nodetag::encode_session_id(state->tag, epoch, state->ring->random());
    if (!encoded.ok()) break;
    // OpenSSL refuses an ID already in the cache rather than replacing the
    // cached session; drawing again is our job.
    if (SSL_has_matching_session_id(ssl, encoded.bytes.data(),
                                    static_cast<unsigned int>(encoded.bytes.size()))) {
      counters.session_id_clashes.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    std::copy(encoded.bytes.begin(), encoded.bytes.end(), id);
    *id_len = static_cast<unsigned int>(encoded.bytes.size());
    counters.session_ids_issued.fetch_add(1, std::memory_order_relaxed);
    return 1;
  }
  counters.session_id_failures.fetch_add(1, std::memory_order_relaxed);
  return 0;
}

// Seals a new ticket with the current key. Returns 1, or 0 for "no ticket"
// (TLS 1.2 then sends an empty NewSessionTicket, TLS 1.3 none): a client
// that cannot resume is better than a failed handshake.
int seal_ticket(TaggingState& state, unsigned char* key_name, unsigned char* iv,
                EVP_CIPHER_CTX* cctx, EVP_MAC_CTX* hctx) {
  TaggingCounters& counters = state.ring->counters();
  const TicketKey key = state.ring->current();
  const int iv_len = EVP_CIPHER_get_iv_length(state.cipher.get());
  if (iv_len <= 0 || iv_len > EVP_MAX_IV_LENGTH || RAND_bytes(iv, iv_len) != 1 ||
      EVP_EncryptInit_ex2(cctx, state.cipher.get(), key.aes_key.data(), iv, nullptr) != 1 ||
      !init_mac(hctx, key)) {
    counters.ticket_failures.fetch_add(1, std::memory_order_relaxed);
    return 0;
  }
  std::copy(key.name.begin(), key.name.end(), key_name);
  counters.tickets_sealed.fetch_add(1, std::memory_order_relaxed);
  return 1;
}

// Opens a ticket the client presented. Returns 1 (resume, no new ticket),
// 2 (resume and issue a fresh ticket), or 0 (unknown key or a failure: full
// handshake). A ticket under a retired key is always renewed. So is every
// TLS 1.3 ticket: OpenSSL 3 sends no NewSessionTicket on a TLS 1.3
// resumption unless asked, and clients that use each ticket once (curl,
// as RFC 8446 C.4 advises) would fall back to a full, untagged-routed
// handshake on every other connection.
int open_ticket(SSL* ssl, TaggingState& state, const unsigned char* key_name,
                const unsigned char* iv, EVP_CIPHER_CTX* cctx, EVP_MAC_CTX* hctx) {
  TaggingCounters& counters = state.ring->counters();
  auto match = state.ring->find(
      std::span<const uint8_t, nodetag::kKeyNameSize>(key_name, nodetag::kKeyNameSize));
  if (!match) {
    counters.tickets_unknown_key.fetch_add(1, std::memory_order_relaxed);
    return 0;
  }
  if (EVP_DecryptInit_ex2(cctx, state.cipher.get(), match->key.aes_key.data(), iv, nullptr) != 1 ||
      !init_mac(hctx, match->key)) {
    counters.ticket_failures.fetch_add(1, std::memory_order_relaxed);
    return 0;
  }
  if (match->current) {
    counters.tickets_opened.fetch_add(1, std::memory_order_relaxed);
    return SSL_version(ssl) == TLS1_3_VERSION ? 2 : 1;
  }
  counters.tickets_renewed.fetch_add(1, std::memory_order_relaxed);
  return 2;
}

// SSL_CTX_set_tlsext_ticket_key_evp_cb callback: `enc` 1 seals, 0 opens.
// `key_name` is 16 bytes, `iv` EVP_MAX_IV_LENGTH bytes.
int ticket_key_callback(SSL* ssl, unsigned char* key_name, unsigned char* iv, EVP_CIPHER_CTX* cctx,
                        EVP_MAC_CTX* hctx, int enc) {
  TaggingState* state = state_of(ssl);
  if (state == nullptr || key_name == nullptr || iv == nullptr || cctx == nullptr ||
      hctx == nullptr)
    return 0;
  return enc ? seal_ticket(*state, key_name, iv, cctx, hctx)
             : open_ticket(ssl, *state, key_name, iv, cctx, hctx);
}

}  // namespace

// ------------------------------------------------------------------ TicketKey

TicketKey::~TicketKey() {
  OPENSSL_cleanse(aes_key.data(), aes_key.size());
  OPENSSL_cleanse(hmac_key.data(), hmac_key.size());
}

// ------------------------------------------------------------- TicketKeyRing

TicketKeyRing::TicketKeyRing(nodetag::Tag tag, TicketKeyRingOptions options,
                             nodetag::RandomSource random)
    : tag_(tag), options_(options), random_(std::move(random)) {}

std::shared_ptr<TicketKeyRing> TicketKeyRing::create(nodetag::Tag tag, TicketKeyRingOptions options,
                                                     Clock::time_point now,
                                                     nodetag::RandomSource random) {
  if (tag == nodetag::kInvalidTag) return nullptr;
  if (options.rotate_interval <= std::chrono::seconds::zero() ||
      options.grace_period < std::chrono::seconds::zero() || options.max_keys < 1 ||
      options.max_keys > kMaxTicketKeys)
    return nullptr;
  std::shared_ptr<TicketKeyRing> ring(new TicketKeyRing(tag, options, std::move(random)));
  RotateOutcome outcome = RotateOutcome::Rotated;
  auto first = ring->make_key(1, now, outcome);
  if (!first) return nullptr;
  ring->keys_.push_back(Entry{std::move(*first), {}});
  return ring;
}

std::optional<TicketKey> TicketKeyRing::make_key(nodetag::Epoch epoch, Clock::time_point now,
                                                 RotateOutcome& outcome) {
  TicketKey key;
  key.epoch = epoch;
  key.created_at = now;
  bool unique = false;
  for (size_t draw = 0; draw < kMaxKeyNameDraws && !unique; ++draw) {
    auto name = nodetag::encode_key_name(tag_, epoch, random_);
    if (!name.ok()) {
      outcome = RotateOutcome::RandomFailed;
      return std::nullopt;
    }
    // Lookups go by the full name: two held keys with one name would make
    // the tickets of one of them fail to open. Keys a ring makes differ in
    // epoch, so a clash needs keys of one epoch (seeded from a file, or
    // after 2^32 rotations); the check costs nothing and keeps that safe.
    unique = std::none_of(keys_.begin(), keys_.end(),
                          [&](const Entry& e) { return e.key.name == name.bytes; });
    key.name = name.bytes;
  }
  if (!unique) {
    outcome = RotateOutcome::NameClash;
    return std::nullopt;
  }
  if (!fill_random(random_, key.aes_key) || !fill_random(random_, key.hmac_key)) {
    outcome = RotateOutcome::RandomFailed;
    return std::nullopt;
  }
  return key;
}

RotateOutcome TicketKeyRing::rotate(Clock::time_point now) {
  std::unique_lock lock(mutex_);
  RotateOutcome outcome = RotateOutcome::Rotated;
  auto fresh = make_key(keys_.back().key.epoch + 1, now, outcome);
  if (!fresh) return outcome;
  keys_.back().retired_at = now;
  keys_.push_back(Entry{std::move(*fresh), {}});
  drop_expired_locked(now);
  return RotateOutcome::Rotated;
}

void TicketKeyRing::drop_expired_locked(Clock::time_point now) {
  // Retired keys are in retirement order (oldest first); the current key is
  // last and is never dropped.
  const auto grace = options_.grace_period;
  auto expired = [&](const Entry& e) { return now - e.retired_at >= grace; };
  keys_.erase(std::remove_if(keys_.begin(), keys_.end() - 1, expired), keys_.end() - 1);
  if (keys_.size() > options_.max_keys)
    keys_.erase(keys_.begin(), keys_.end() - static_cast<std::ptrdiff_t>(options_.max_keys));
}

RotateOutcome TicketKeyRing::maybe_rotate(Clock::time_point now) {
  {
    std::shared_lock lock(mutex_);
    const bool due = now - keys_.back().key.created_at >= options_.rotate_interval;
    const bool expired =
        keys_.size() > 1 && now - keys_.front().retired_at >= options_.grace_period;
    if (!due && !expired) return RotateOutcome::NotDue;
    if (due) {
      lock.unlock();
      // Two timers racing here would both rotate; the node-proxy runs one.
      return rotate(now);
    }
  }
  std::unique_lock lock(mutex_);
  drop_expired_locked(now);
  return RotateOutcome::NotDue;
}

TicketKey TicketKeyRing::current() const {
  std::shared_lock lock(mutex_);
  return keys_.back().key;
}

nodetag::Epoch TicketKeyRing::current_epoch() const {
  std::shared_lock lock(mutex_);
  return keys_.back().key.epoch;
}

std::optional<TicketKeyRing::Match> TicketKeyRing::find(
    std::span<const uint8_t, nodetag::kKeyNameSize> name) const {
  std::shared_lock lock(mutex_);
  for (size_t i = 0; i < keys_.size(); ++i) {
    if (std::equal(name.begin(), name.end(), keys_[i].key.name.begin()))
      return Match{keys_[i].key, i + 1 == keys_.size()};
  }
  return std::nullopt;
}

size_t TicketKeyRing::size() const {
  std::shared_lock lock(mutex_);
  return keys_.size();
}

// -------------------------------------------------------------- installation

InstallError install_node_tagging(SSL_CTX* ctx, nodetag::Tag tag,
                                  std::shared_ptr<TicketKeyRing> ring) {
  if (tag == nodetag::kInvalidTag) return InstallError::InvalidTag;
  if (!ring) return InstallError::NoKeyRing;
  if (ring->tag() != tag) return InstallError::TagMismatch;
  const int index = state_index();
  if (ctx == nullptr || index < 0) return InstallError::ExDataFailed;

  auto state = std::make_unique<TaggingState>();
  state->tag = tag;
  state->ring = std::move(ring);
  state->cipher.reset(EVP_CIPHER_fetch(nullptr, kTicketCipher, nullptr));
  if (!state->cipher) return InstallError::CipherUnavailable;

  // The state must be in place before a callback can run; the callbacks are
  // set last so that a failure leaves no callback pointing at nothing.
  TaggingState* previous = state_of(ctx);
  if (SSL_CTX_set_ex_data(ctx, index, state.get()) != 1) return InstallError::ExDataFailed;
  TaggingState* installed = state.release();
  if (SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_key_callback) != 1 ||
      SSL_CTX_set_generate_session_id(ctx, generate_session_id) != 1) {
    SSL_CTX_set_ex_data(ctx, index, previous);
    delete installed;
    return InstallError::CallbackRejected;
  }
  // Not freed by OpenSSL: set_ex_data overwrites the slot without calling
  // the free callback on the old value.
  delete previous;
  return InstallError::None;
}

std::shared_ptr<TicketKeyRing> installed_ring(const SSL_CTX* ctx) {
  TaggingState* state = state_of(ctx);
  return state ? state->ring : nullptr;
}

}  // namespace edgepin::tagging
