#pragma once
// The WebSocket (Upgrade) tunnel of one exchange: after the upstream's 101
// went to the client, both transports are handed to a Relay (relay.h),
// which copies bytes both ways byte-exact under back-pressure, with the
// `timeouts.tunnel` idle limit. The upstream connection never returns to
// the pool. When the relay ends, the tunnel reports how (RequestEnd, bytes
// each way, error detail) to its exchange, which logs the request.
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "counters.h"
#include "event_ptr.h"
#include "relay.h"

namespace edgepin::nodeproxy {

class UpgradeTunnel {
 public:
  struct Outcome {
    RequestEnd end = RequestEnd::TunnelClosed;
    uint64_t client_to_upstream = 0;
    uint64_t upstream_to_client = 0;
    std::string error;  // set for TunnelError
  };
  // `done` runs once, from the relay's callback: it must not destroy the
  // tunnel (the owner frees it later, from its own loop).
  UpgradeTunnel(BufferEventPtr client, BufferEventPtr upstream, std::chrono::milliseconds idle,
                std::function<void(const Outcome&)> done);
  ~UpgradeTunnel();
  UpgradeTunnel(const UpgradeTunnel&) = delete;
  UpgradeTunnel& operator=(const UpgradeTunnel&) = delete;

  void start();
  // Ends it now (the connection is being destroyed); `done` runs.
  void stop();
  size_t buffered_bytes() const;

 private:
  void on_end(const Relay::Result& r);

  std::unique_ptr<Relay> relay_;
  std::function<void(const Outcome&)> done_;
};

}  // namespace edgepin::nodeproxy
