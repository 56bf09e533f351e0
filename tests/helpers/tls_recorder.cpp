#include "tests/helpers/tls_recorder.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "ssl_ptr.h"

namespace edgepin::test {
namespace {

using Clock = std::chrono::steady_clock;

// Poll slices: short enough that finish() and the destructor return fast.
constexpr int kPollSliceMs = 50;
// How long the server waits for the client to close after close_notify.
constexpr auto kDrainTime = std::chrono::seconds(3);
constexpr size_t kTicketKeyNameBytes = 16;
constexpr size_t kTicketIvBytes = 16;  // AES-256-CBC

std::string openssl_errors() {
  std::string s;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!s.empty()) s += "; ";
    s += buf;
  }
  return s.empty() ? "no OpenSSL error queued" : s;
}

[[noreturn]] void throw_openssl(const std::string& what) {
  throw std::runtime_error(what + ": " + openssl_errors());
}

// Owns a socket descriptor.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  void reset(int fd) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_;
};

int ms_until(Clock::time_point deadline) {
  auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return static_cast<int>(std::max<long long>(0, std::min<long long>(left, kPollSliceMs)));
}

}  // namespace

struct TlsRecorder::Impl {
  Options options;
  SslCtxPtr ctx;
  std::vector<uint8_t> alpn_wire;  // server preference in ALPN wire format
  std::array<uint8_t, 32> ticket_aes_key{};
  std::array<uint8_t, 32> ticket_hmac_key{};
  Fd listener;
  uint16_t port = 0;
  Clock::time_point deadline;
  std::atomic<bool> stop{false};
  std::mutex mutex;
  std::condition_variable cv;
  std::vector<RecordedConnection> done;
  bool finished = false;  // the thread ended (no more connections will come)
  std::thread thread;

  void run();
  void serve(int fd, RecordedConnection& rec);
  bool send_all(int fd, RecordedConnection& rec, BIO* wbio);
};

namespace {

int alpn_select(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
                unsigned int inlen, void* arg) {
  auto* impl = static_cast<TlsRecorder::Impl*>(arg);
  unsigned char* chosen = nullptr;
  if (SSL_select_next_proto(&chosen, outlen, impl->alpn_wire.data(),
                            static_cast<unsigned>(impl->alpn_wire.size()), in,
                            inlen) != OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_NOACK;
  *out = chosen;
  return SSL_TLSEXT_ERR_OK;
}

int servername_ack(SSL*, int*, void*) { return SSL_TLSEXT_ERR_OK; }

// RFC 5077 4's recommended ticket layout, as OpenSSL writes it: key_name,
// IV, encrypted state, HMAC. The recorder chooses key_name and IV, so it
// knows the first 32 bytes of every ticket it issues.
int ticket_key_cb(SSL* ssl, unsigned char key_name[16], unsigned char* iv, EVP_CIPHER_CTX* cctx,
                  EVP_MAC_CTX* hctx, int enc) {
  auto* impl = static_cast<TlsRecorder::Impl*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
  auto* rec = static_cast<RecordedConnection*>(SSL_get_app_data(ssl));
  const auto& name = *impl->options.ticket_key_name;
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, impl->ticket_hmac_key.data(),
                                        impl->ticket_hmac_key.size()),
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
      OSSL_PARAM_construct_end()};
  if (enc) {
    std::memcpy(key_name, name.data(), kTicketKeyNameBytes);
    if (RAND_bytes(iv, kTicketIvBytes) != 1) return -1;
    if (EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), nullptr, impl->ticket_aes_key.data(), iv) != 1)
      return -1;
    if (EVP_MAC_CTX_set_params(hctx, params) != 1) return -1;
    std::vector<uint8_t> prefix(key_name, key_name + kTicketKeyNameBytes);
    prefix.insert(prefix.end(), iv, iv + kTicketIvBytes);
    if (rec) rec->issued_ticket_prefixes.push_back(std::move(prefix));
    return 1;
  }
  if (rec) rec->presented_ticket_key_names.emplace_back(key_name, key_name + kTicketKeyNameBytes);
  if (std::memcmp(key_name, name.data(), kTicketKeyNameBytes) != 0)
    return 0;  // unknown key: full handshake
  if (EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), nullptr, impl->ticket_aes_key.data(), iv) != 1)
    return -1;
  if (EVP_MAC_CTX_set_params(hctx, params) != 1) return -1;
  return 1;
}

}  // namespace

TlsRecorder::TlsRecorder(Options options) : impl_(std::make_unique<Impl>()) {
  Impl& im = *impl_;
  im.options = std::move(options);
  const Options& o = im.options;
  im.ctx.reset(SSL_CTX_new(TLS_server_method()));
  if (!im.ctx) throw_openssl("SSL_CTX_new");
  SSL_CTX* ctx = im.ctx.get();
  SSL_CTX_set_app_data(ctx, &im);
  if (SSL_CTX_use_certificate_chain_file(ctx, o.cert_file.c_str()) != 1)
    throw_openssl("certificate " + o.cert_file.string());
  if (SSL_CTX_use_PrivateKey_file(ctx, o.key_file.c_str(), SSL_FILETYPE_PEM) != 1)
    throw_openssl("key " + o.key_file.string());
  if (SSL_CTX_set_min_proto_version(ctx, o.min_version) != 1 ||
      SSL_CTX_set_max_proto_version(ctx, o.max_version) != 1)
    throw_openssl("protocol versions");
  static const unsigned char kSidContext[] = "edgepin-recorder";
  SSL_CTX_set_session_id_context(ctx, kSidContext, sizeof kSidContext - 1);
  if (!o.tickets) SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
  SSL_CTX_set_session_cache_mode(ctx, o.session_cache ? SSL_SESS_CACHE_SERVER : SSL_SESS_CACHE_OFF);
  SSL_CTX_set_num_tickets(ctx, o.num_tickets);
  if (!o.groups.empty() && SSL_CTX_set1_groups_list(ctx, o.groups.c_str()) != 1)
    throw_openssl("groups " + o.groups);
  if (!o.alpn.empty()) {
    for (const auto& p : o.alpn) {
      if (p.empty() || p.size() > 255) throw std::runtime_error("bad ALPN protocol name");
      im.alpn_wire.push_back(static_cast<uint8_t>(p.size()));
      im.alpn_wire.insert(im.alpn_wire.end(), p.begin(), p.end());
    }
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, &im);
  }
  // Acknowledging SNI makes OpenSSL keep the name in the session, so
  // SSL_get_servername also answers on resumed connections.
  SSL_CTX_set_tlsext_servername_callback(ctx, servername_ack);
  if (o.ticket_key_name) {
    if (RAND_bytes(im.ticket_aes_key.data(), static_cast<int>(im.ticket_aes_key.size())) != 1 ||
        RAND_bytes(im.ticket_hmac_key.data(), static_cast<int>(im.ticket_hmac_key.size())) != 1)
      throw_openssl("RAND_bytes");
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_key_cb);
  }
  if (o.configure) o.configure(ctx);

  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error("socket failed");
  im.listener.reset(fd);
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(fd, 16) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
    throw std::runtime_error(std::string("listen on 127.0.0.1:0: ") + std::strerror(errno));
  im.port = ntohs(addr.sin_port);
  im.deadline = Clock::now() + o.deadline;
  im.thread = std::thread([&im] { im.run(); });
}

TlsRecorder::~TlsRecorder() {
  if (impl_ && impl_->thread.joinable()) {
    impl_->stop = true;
    impl_->thread.join();
  }
}

uint16_t TlsRecorder::port() const { return impl_->port; }

std::optional<RecordedConnection> TlsRecorder::connection(size_t index,
                                                          std::chrono::milliseconds timeout) {
  std::unique_lock lock(impl_->mutex);
  impl_->cv.wait_for(lock, timeout, [&] { return impl_->done.size() > index || impl_->finished; });
  if (impl_->done.size() > index) return impl_->done[index];
  return std::nullopt;
}

std::vector<RecordedConnection> TlsRecorder::finish() {
  impl_->stop = true;
  if (impl_->thread.joinable()) impl_->thread.join();
  std::lock_guard lock(impl_->mutex);
  return impl_->done;
}

void TlsRecorder::Impl::run() {
  for (size_t n = 0; n < options.connections && !stop && Clock::now() < deadline;) {
    pollfd p{listener.get(), POLLIN, 0};
    if (::poll(&p, 1, ms_until(deadline)) <= 0) continue;
    Fd conn(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (conn.get() < 0) continue;
    RecordedConnection rec;
    serve(conn.get(), rec);
    ++n;
    std::lock_guard lock(mutex);
    done.push_back(std::move(rec));
    cv.notify_all();
  }
  std::lock_guard lock(mutex);
  finished = true;
  cv.notify_all();
}

// Moves whatever the SSL wrote from its output BIO to the socket, recording
// it. Returns false if the socket failed or the deadline passed.
bool TlsRecorder::Impl::send_all(int fd, RecordedConnection& rec, BIO* wbio) {
  char buf[16384];
  int n = 0;
  while ((n = BIO_read(wbio, buf, sizeof buf)) > 0) {
    rec.server_bytes.insert(rec.server_bytes.end(), buf, buf + n);
    size_t sent = 0;
    while (sent < static_cast<size_t>(n)) {
      if (stop || Clock::now() >= deadline) return false;
      ssize_t w =
          ::send(fd, buf + sent, static_cast<size_t>(n) - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (w > 0) {
        sent += static_cast<size_t>(w);
      } else if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
        pollfd p{fd, POLLOUT, 0};
        ::poll(&p, 1, ms_until(deadline));
      } else {
        return false;
      }
    }
  }
  return true;
}

void TlsRecorder::Impl::serve(int fd, RecordedConnection& rec) {
  SslPtr ssl(SSL_new(ctx.get()));
  if (!ssl) {
    rec.error = "SSL_new: " + openssl_errors();
    return;
  }
  BIO* rbio = BIO_new(BIO_s_mem());
  BIO* wbio = BIO_new(BIO_s_mem());
  if (!rbio || !wbio) {
    BIO_free(rbio);
    BIO_free(wbio);
    rec.error = "BIO_new failed";
    return;
  }
  SSL_set_bio(ssl.get(), rbio, wbio);  // the SSL owns both from here
  SSL_set_accept_state(ssl.get());
  SSL_set_app_data(ssl.get(), &rec);

  enum class Phase { Handshake, Greeting, Shutdown, Drain };
  Phase phase = Phase::Handshake;
  size_t greeting_sent = 0;
  while (phase != Phase::Drain) {
    if (stop || Clock::now() >= deadline) {
      rec.error = rec.error.empty() ? "deadline passed" : rec.error;
      return;
    }
    int r = 0;
    switch (phase) {
      case Phase::Handshake:
        r = SSL_do_handshake(ssl.get());
        break;
      case Phase::Greeting:
        r = SSL_write(ssl.get(), options.greeting.data() + greeting_sent,
                      static_cast<int>(options.greeting.size() - greeting_sent));
        break;
      case Phase::Shutdown:
        r = SSL_shutdown(ssl.get());
        break;
      case Phase::Drain:
        break;
    }
    int err = r > 0 || (phase == Phase::Shutdown && r == 0) ? SSL_ERROR_NONE
                                                            : SSL_get_error(ssl.get(), r);
    // Send what the SSL produced, alerts included, before anything else.
    if (!send_all(fd, rec, wbio)) {
      rec.error = "sending to the client failed";
      return;
    }
    if (err == SSL_ERROR_NONE) {
      if (phase == Phase::Handshake) {
        rec.handshake_ok = true;
        rec.version = SSL_version(ssl.get());
        rec.session_reused = SSL_session_reused(ssl.get()) == 1;
        if (const char* sni = SSL_get_servername(ssl.get(), TLSEXT_NAMETYPE_host_name))
          rec.server_name = sni;
        const unsigned char* proto = nullptr;
        unsigned int proto_len = 0;
        SSL_get0_alpn_selected(ssl.get(), &proto, &proto_len);
        rec.alpn.assign(reinterpret_cast<const char*>(proto), proto_len);
        if (SSL_SESSION* s = SSL_get_session(ssl.get())) {
          unsigned int id_len = 0;
          const unsigned char* id = SSL_SESSION_get_id(s, &id_len);
          rec.session_id.assign(id, id + id_len);
        }
        phase = options.greeting.empty() ? Phase::Shutdown : Phase::Greeting;
      } else if (phase == Phase::Greeting) {
        greeting_sent += static_cast<size_t>(r);
        if (greeting_sent == options.greeting.size()) phase = Phase::Shutdown;
      } else {
        phase = Phase::Drain;
      }
      continue;
    }
    if (err != SSL_ERROR_WANT_READ) {
      rec.error = "TLS error " + std::to_string(err) + ": " + openssl_errors();
      if (phase == Phase::Handshake) return;
      break;  // the handshake succeeded: still record the client's last bytes
    }
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, ms_until(deadline)) <= 0) continue;
    char buf[16384];
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) {
      rec.error = "client closed the connection during " +
                  std::string(phase == Phase::Handshake ? "the handshake" : "the exchange");
      return;
    }
    rec.client_bytes.insert(rec.client_bytes.end(), buf, buf + n);
    BIO_write(rbio, buf, static_cast<int>(n));
  }
  // Keep recording until the client closes, so client_bytes is complete.
  auto drain_end = std::min(deadline, Clock::now() + kDrainTime);
  while (!stop && Clock::now() < drain_end) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, ms_until(drain_end)) <= 0) continue;
    char buf[16384];
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    rec.client_bytes.insert(rec.client_bytes.end(), buf, buf + n);
  }
}

SavedSession read_session_file(const std::filesystem::path& path) {
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "r"), &std::fclose);
  if (!f) throw std::runtime_error("cannot open " + path.string());
  SslSessionPtr s(PEM_read_SSL_SESSION(f.get(), nullptr, nullptr, nullptr));
  if (!s) throw_openssl("PEM_read_SSL_SESSION " + path.string());
  SavedSession out;
  out.version = SSL_SESSION_get_protocol_version(s.get());
  unsigned int id_len = 0;
  const unsigned char* id = SSL_SESSION_get_id(s.get(), &id_len);
  out.id.assign(id, id + id_len);
  const unsigned char* tick = nullptr;
  size_t tick_len = 0;
  SSL_SESSION_get0_ticket(s.get(), &tick, &tick_len);
  if (tick) out.ticket.assign(tick, tick + tick_len);
  out.ticket_lifetime_hint = static_cast<uint32_t>(SSL_SESSION_get_ticket_lifetime_hint(s.get()));
  return out;
}

}  // namespace edgepin::test
