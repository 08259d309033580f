#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace stsrelay::sts {

// Bounds on what a response may make us hold in memory.
struct HttpLimits {
  std::size_t max_header_bytes = 16 * 1024;  // status line, headers and, later, trailers
  std::size_t max_body_bytes = 64 * 1024;
};

struct HttpResponse {
  int status = 0;
  std::string reason_phrase;
  std::vector<std::pair<std::string, std::string>> headers;  // names as sent, values trimmed
  std::string body;

  // The first header of that name (case-insensitive).
  std::optional<std::string_view> header(std::string_view name) const;
};

enum class HttpParseError {
  bad_status_line,
  bad_header,     // malformed line, or whitespace before the colon (RFC 9112 §5.1)
  folded_header,  // obs-fold (RFC 9112 §5.2): rejected, never unfolded
  headers_too_large,
  bad_content_length,  // not digits, or duplicates that disagree
  ambiguous_length,    // both Transfer-Encoding and Content-Length (RFC 9112 §6.3)
  unsupported_transfer_encoding,
  bad_chunk,
  body_too_large,
  truncated,  // the connection ended before the message did
  unexpected_upgrade,
};
std::string_view to_string(HttpParseError error);

// An HTTP/1.1 response parser with no I/O (Beast style): feed it bytes as
// they arrive, in pieces of any size, and it says whether it needs more,
// has the complete response, or has failed. A body is framed by
// Content-Length, by chunked transfer coding (extensions skipped, trailers
// read and dropped), or, with neither, by the end of the connection, which
// the caller reports with finish(). 1xx interim responses are skipped.
// Bare LF line ends are accepted (RFC 9112 §2.2), a bare CR is not.
class HttpResponseParser {
 public:
  enum class State { need_more, complete, failed };

  explicit HttpResponseParser(HttpLimits limits = {});

  // Bytes after a complete response are ignored.
  State feed(std::string_view bytes);
  // The peer closed the connection.
  State finish();

  State state() const { return state_; }
  // True once the final status line and headers are in: the caller may
  // judge status and headers before the body arrives.
  bool headers_complete() const;
  // True when the body runs until the connection closes.
  bool body_until_close() const { return phase_ == Phase::body_until_close; }

  const HttpResponse& response() const { return response_; }
  HttpResponse take_response() { return std::move(response_); }

  HttpParseError error() const { return error_; }
  const std::string& error_detail() const { return error_detail_; }

 private:
  enum class Phase {
    status_line,
    header_line,
    body_by_length,
    body_until_close,
    chunk_size_line,
    chunk_data,
    chunk_data_end,
    trailer_line,
    done,
  };

  State fail(HttpParseError error, std::string detail);
  // Appends to line_ up to a line end; true when a whole line is in line_.
  bool take_line(std::string_view bytes, std::size_t& position, std::size_t limit);
  bool line_too_long(bool whole, std::size_t limit) const;
  State on_status_line();
  State on_header_line();
  State on_headers_end();
  State on_chunk_size_line();
  State append_body(std::string_view bytes);

  HttpLimits limits_;
  State state_ = State::need_more;
  Phase phase_ = Phase::status_line;
  HttpResponse response_;
  std::string line_;
  std::size_t header_bytes_ = 0;
  std::uint64_t remaining_ = 0;  // of the body or of the current chunk
  HttpParseError error_ = HttpParseError::truncated;
  std::string error_detail_;
};

}  // namespace stsrelay::sts
