#pragma once
// A real OpenSSL TLS server on 127.0.0.1 (port 0) that records, for each
// connection, the raw bytes the client sent and the raw bytes the server
// sent, plus what the server concluded (version, SNI, ALPN, resumption, the
// session it issued). Tests point real clients (openssl s_client, Python's
// ssl) at it and feed the recorded bytes to the parsers under test.
//
// The server runs on its own thread and handles `connections` connections
// one after the other, each bounded by the recorder's deadline. The SSL
// object talks to memory BIOs and the thread moves bytes between them and
// the socket, so every byte on the wire passes through the recorder.
//
// Per connection the server: completes the handshake (a TLS 1.3 server
// sends its NewSessionTickets within it), writes `greeting`, sends
// close_notify, and reads until the client closes. Clients should read until
// the server closes (s_client: -ign_eof); then their session holds the
// server's tickets.
//
// The recorder uses SSL_CTX and SSL app_data; a `configure` hook that needs
// per-context data of its own should use ex_data.
#include <openssl/ssl.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace edgepin::test {

struct RecordedConnection {
  std::vector<uint8_t> client_bytes;  // everything the client sent, as read from the socket
  std::vector<uint8_t> server_bytes;  // everything the server wrote to the socket
  bool handshake_ok = false;
  std::string error;  // why the handshake failed, if it did
  int version = 0;    // SSL_version(), e.g. TLS1_3_VERSION
  bool session_reused = false;
  std::string server_name;          // the SNI the server received, "" if none
  std::string alpn;                 // the protocol the server selected, "" if none
  std::vector<uint8_t> session_id;  // SSL_SESSION_get_id() of the connection's session
  // With Options::ticket_key_name: the first 32 bytes (key_name then IV) of
  // each ticket the server issued on this connection, and the key names of
  // the tickets a client presented.
  std::vector<std::vector<uint8_t>> issued_ticket_prefixes;
  std::vector<std::vector<uint8_t>> presented_ticket_key_names;
};

class TlsRecorder {
 public:
  struct Options {
    std::filesystem::path cert_file;  // PEM certificate (chain allowed)
    std::filesystem::path key_file;   // PEM private key
    int min_version = TLS1_2_VERSION;
    int max_version = TLS1_3_VERSION;
    bool tickets = true;        // off: SSL_OP_NO_TICKET
    bool session_cache = true;  // off: SSL_SESS_CACHE_OFF
    // TLS 1.3 tickets per full handshake (OpenSSL's default is 2).
    size_t num_tickets = 1;
    // Server's ALPN preference; empty: no ALPN callback.
    std::vector<std::string> alpn;
    // SSL_CTX_set1_groups_list; empty keeps OpenSSL's default. A list the
    // client did not send a key share for forces a HelloRetryRequest.
    std::string groups;
    // When set, tickets are encrypted by a built-in key callback whose key
    // name is this (TLS 1.2 tickets and TLS 1.3 PSK identities start with
    // it) and every issued ticket's prefix is recorded.
    std::optional<std::array<uint8_t, 16>> ticket_key_name;
    // Runs after everything above, to install e.g.
    // SSL_CTX_set_generate_session_id.
    std::function<void(SSL_CTX*)> configure;
    size_t connections = 1;
    // The whole recorder's lifetime: accepting and serving stop after it.
    std::chrono::milliseconds deadline{20000};
    std::string greeting = "edgepin-recorder\n";
  };

  // Sets up the context, binds 127.0.0.1:0 and starts the server thread.
  // Throws std::runtime_error on any setup error.
  explicit TlsRecorder(Options options);
  // Stops the thread (at most one poll slice later) and joins it.
  ~TlsRecorder();
  TlsRecorder(const TlsRecorder&) = delete;
  TlsRecorder& operator=(const TlsRecorder&) = delete;

  uint16_t port() const;

  // Waits until connection `index` (0-based, in accept order) has been
  // recorded. Returns nullopt if it was not within `timeout` (or the
  // recorder's deadline passed first).
  std::optional<RecordedConnection> connection(size_t index, std::chrono::milliseconds timeout);

  // Stops accepting, joins the thread, and returns every recorded connection.
  std::vector<RecordedConnection> finish();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// A client-side session as `openssl s_client -sess_out FILE` saves it.
struct SavedSession {
  int version = 0;                    // SSL_SESSION_get_protocol_version
  std::vector<uint8_t> id;            // SSL_SESSION_get_id
  std::vector<uint8_t> ticket;        // SSL_SESSION_get0_ticket (empty if none)
  uint32_t ticket_lifetime_hint = 0;  // seconds
};

// Loads a PEM SSL_SESSION file. Throws std::runtime_error if it cannot.
SavedSession read_session_file(const std::filesystem::path& path);

}  // namespace edgepin::test
