#pragma once
// The three outcomes every incremental parser in common/ reports. A parser
// given a prefix of valid input answers NeedMore; the caller appends bytes
// and calls again with the whole buffer. Done carries how many bytes were
// consumed; Error carries a codec-specific error code.
#include <cstdint>

namespace edgepin {

enum class ParseStatus : uint8_t { NeedMore, Done, Error };

constexpr const char* to_string(ParseStatus s) {
  switch (s) {
    case ParseStatus::NeedMore:
      return "need_more";
    case ParseStatus::Done:
      return "done";
    case ParseStatus::Error:
      return "error";
  }
  return "?";
}

}  // namespace edgepin
