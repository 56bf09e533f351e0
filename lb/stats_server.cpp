#include "stats_server.h"

#include <utility>

namespace edgepin::lb {

StatsServer::StatsServer(Options options, Source source)
    : server_(StatsHttpServer::Options{.bind = std::move(options.bind),
                                       .deadline = options.deadline,
                                       .max_clients = options.max_clients,
                                       .name = "stats",
                                       .thread_name = "lb-stats"},
              StatsHttpServer::Pages{
                  .html = [source] { return render_html(source()); },
                  .json = [source] { return to_json(source()).dump(1) + "\n"; },
                  .metrics = [source] { return render_prometheus(source()); },
              }) {}

}  // namespace edgepin::lb
