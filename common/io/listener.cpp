#include "listener.h"

#include <netinet/in.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace edgepin {

ListenResult listen_reuseport(event_base* base, const SocketAddress& address, int backlog,
                              evconnlistener_cb cb, void* arg) {
  ListenResult r;
  auto fail = [&](const char* what, int fd) {
    r.error = std::string(what) + " " + address.to_string() + ": " + std::strerror(errno);
    if (fd >= 0) ::close(fd);
    return std::move(r);
  };
  sockaddr_storage ss{};
  const socklen_t len = address.to_sockaddr(ss);
  const auto* sa = reinterpret_cast<const sockaddr*>(&ss);
  int fd = ::socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return fail("socket", -1);
  int one = 1;
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
      setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0)
    return fail("setsockopt", fd);
  if (sa->sa_family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) != 0)
    return fail("setsockopt IPV6_V6ONLY", fd);
  if (::bind(fd, sa, len) != 0) return fail("bind", fd);
  if (::listen(fd, backlog) != 0) return fail("listen", fd);
  r.listener.reset(
      evconnlistener_new(base, cb, arg, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fd));
  if (!r.listener) return fail("evconnlistener_new", fd);
  return r;
}

ListenResult listen_reuseport(event_base* base, const sockaddr* addr, socklen_t len, int backlog,
                              evconnlistener_cb cb, void* arg) {
  auto address = SocketAddress::from_sockaddr(addr, len);
  if (!address) return ListenResult{nullptr, "unsupported address"};
  return listen_reuseport(base, *address, backlog, cb, arg);
}

}  // namespace edgepin
