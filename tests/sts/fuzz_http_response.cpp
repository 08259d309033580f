// libFuzzer target for the HTTP response parser: no input may crash it, and
// how the bytes are split between feed() calls must never change the outcome.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "sts/http_response.hpp"

namespace {

using stsrelay::sts::HttpLimits;
using stsrelay::sts::HttpResponseParser;

struct Outcome {
  HttpResponseParser::State state;
  int status;
  std::string body;
};

Outcome parse(std::string_view input, std::size_t piece) {
  HttpResponseParser parser(HttpLimits{512, 256});
  for (std::size_t offset = 0; offset < input.size(); offset += piece) {
    if (parser.feed(input.substr(offset, piece)) != HttpResponseParser::State::need_more) {
      break;
    }
  }
  parser.finish();
  bool ok = parser.state() == HttpResponseParser::State::complete;
  if (ok && parser.response().body.size() > 256) {
    std::abort();
  }
  return {parser.state(), ok ? parser.response().status : 0,
          ok ? parser.response().body : std::string()};
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) {
    return 0;
  }
  std::size_t piece = 1 + data[0] % 13;
  std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  Outcome whole = parse(input, input.size() + 1);
  Outcome split = parse(input, piece);
  if (whole.state != split.state || whole.status != split.status || whole.body != split.body) {
    std::abort();
  }
  return 0;
}
