#pragma once
// Owning handles for libevent objects; see ssl_ptr.h for why.
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include <memory>

#include "ssl_ptr.h"

namespace edgepin {

using EventBasePtr = std::unique_ptr<event_base, CDeleter<event_base_free>>;
using EventPtr = std::unique_ptr<event, CDeleter<event_free>>;
using BufferEventPtr = std::unique_ptr<bufferevent, CDeleter<bufferevent_free>>;
using ListenerPtr = std::unique_ptr<evconnlistener, CDeleter<evconnlistener_free>>;
using EvBufferPtr = std::unique_ptr<evbuffer, CDeleter<evbuffer_free>>;

}  // namespace edgepin
