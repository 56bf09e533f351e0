#include "upgrade_tunnel.h"
#include "time_util.h"

#include <cerrno>
#include <cstring>

#include "client_codec.h"

namespace edgepin::nodeproxy {

UpgradeTunnel::UpgradeTunnel(BufferEventPtr client, BufferEventPtr upstream,
                             std::chrono::milliseconds idle,
                             std::function<void(const Outcome&)> done)
    : done_(std::move(done)) {
  for (bufferevent* b : {client.get(), upstream.get()}) {
    bufferevent_set_timeouts(b, nullptr, nullptr);
    bufferevent_setwatermark(b, EV_READ, 0, 0);
  }
  Relay::Options ro;
  ro.high_watermark = kHighWatermark;
  ro.idle_timeout = to_timeval(idle);
  relay_ = std::make_unique<Relay>(std::move(client), std::move(upstream), ro,
                                   [this](const Relay::Result& r) { on_end(r); });
}

UpgradeTunnel::~UpgradeTunnel() = default;

void UpgradeTunnel::start() { relay_->start(); }

void UpgradeTunnel::stop() { relay_->stop(); }

size_t UpgradeTunnel::buffered_bytes() const {
  size_t n = 0;
  for (bufferevent* b : {relay_->a(), relay_->b()}) {
    if (!b) continue;
    n += evbuffer_get_length(bufferevent_get_input(b)) +
         evbuffer_get_length(bufferevent_get_output(b));
  }
  return n;
}

void UpgradeTunnel::on_end(const Relay::Result& r) {
  Outcome o;
  o.client_to_upstream = relay_->bytes_a_to_b();
  o.upstream_to_client = relay_->bytes_b_to_a();
  switch (r.end) {
    case RelayEnd::BothClosed:
      o.end = RequestEnd::TunnelClosed;
      break;
    case RelayEnd::IdleTimeout:
      o.end = RequestEnd::TunnelTimeout;
      break;
    case RelayEnd::AReset:
    case RelayEnd::BReset:
      o.end = RequestEnd::TunnelError;
      o.error = std::string(r.end == RelayEnd::AReset ? "client" : "upstream") +
                " error: " + std::strerror(r.error ? r.error : ECONNRESET);
      break;
    case RelayEnd::Stopped:
      o.end = RequestEnd::Shutdown;
      break;
  }
  if (done_) done_(o);
}

}  // namespace edgepin::nodeproxy
