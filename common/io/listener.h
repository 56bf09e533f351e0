#pragma once
// Listening sockets for worker threads: one socket per worker and address,
// all bound with SO_REUSEPORT so the kernel spreads new connections over
// the workers without a shared accept lock.
#include <sys/socket.h>

#include <string>

#include "event_ptr.h"
#include "net_address.h"

namespace edgepin {

struct ListenResult {
  ListenerPtr listener;  // null on failure
  std::string error;     // "bind 127.0.0.1:443: Address already in use"
};

// Binds `address`, listens with `backlog` and attaches `cb` on `base`. IPv6
// sockets are IPV6_V6ONLY so "[::]:443" and "0.0.0.0:443" can coexist.
// Returns the listener, or a null listener and the failing step with the
// address and strerror text.
ListenResult listen_reuseport(event_base* base, const SocketAddress& address, int backlog,
                              evconnlistener_cb cb, void* arg);

// The same for an address already in a sockaddr (AF_INET or AF_INET6 of
// `len` bytes); anything else fails with "unsupported address".
ListenResult listen_reuseport(event_base* base, const sockaddr* addr, socklen_t len, int backlog,
                              evconnlistener_cb cb, void* arg);

}  // namespace edgepin
