#pragma once
// The answers the node-proxy makes itself instead of proxying: the health
// endpoint (`health.path`, for the lb and the peers), the stats page
// (`stats.path`, HTML or JSON, optionally limited to some sources), and
// 405 for CONNECT and for other methods on those paths. /metrics is served
// by the separate metrics listener (metrics.h), not here.
//
// Pure apart from what it reads through the WorkerContext (node state, the
// stats renderer): it decides on a parsed request head and returns the
// response; the exchange sends it and logs it (exchange.h).
#include <optional>
#include <string>

#include "client_info.h"
#include "http1.h"
#include "worker_context.h"

namespace edgepin::nodeproxy {

struct BuiltinAnswer {
  LocalResponse response;
  // The request has a body that is not read: the connection closes after
  // the answer so that it is never taken for the next request.
  bool close = false;
  // A passing health check: counted, not logged (HAProxy's monitor-uri).
  bool quiet = false;
};

// The answer for `head` received from `client`, or nullopt when the
// request is not for the proxy itself (it is routed).
std::optional<BuiltinAnswer> answer_builtin(const WorkerContext& ctx, const ClientInfo& client,
                                            const http1::RequestHead& head);

}  // namespace edgepin::nodeproxy
