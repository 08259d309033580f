#include "sts/http_response.hpp"

#include <algorithm>
#include <limits>

namespace stsrelay::sts {

namespace {

// A chunk-size line is hex digits and extensions we skip; anything longer
// than this is not a chunk header anyone means.
constexpr std::size_t max_chunk_line = 4096;

char lower(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

bool equal_ignoring_case(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(),
                                            [](char x, char y) { return lower(x) == lower(y); });
}

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

bool is_token_char(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c)) {
    return true;
  }
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool is_whitespace(char c) {
  return c == ' ' || c == '\t';
}

// Field values and reason phrases: no control characters but HTAB.
bool is_text(std::string_view text) {
  return std::all_of(text.begin(), text.end(), [](char c) {
    auto byte = static_cast<unsigned char>(c);
    return byte == '\t' || (byte >= 0x20 && byte != 0x7f);
  });
}

std::string_view trim(std::string_view text) {
  while (!text.empty() && is_whitespace(text.front())) {
    text.remove_prefix(1);
  }
  while (!text.empty() && is_whitespace(text.back())) {
    text.remove_suffix(1);
  }
  return text;
}

// Calls visit on each trimmed, non-empty element of a comma-separated list.
template <typename Visit>
void for_each_element(std::string_view list, Visit visit) {
  while (true) {
    std::size_t comma = list.find(',');
    std::string_view element = trim(list.substr(0, comma));
    if (!element.empty()) {
      visit(element);
    }
    if (comma == std::string_view::npos) {
      return;
    }
    list.remove_prefix(comma + 1);
  }
}

int hex_value(char c) {
  if (is_digit(c)) {
    return c - '0';
  }
  c = lower(c);
  return (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
}

}  // namespace

std::optional<std::string_view> HttpResponse::header(std::string_view name) const {
  for (const auto& [field, value] : headers) {
    if (equal_ignoring_case(field, name)) {
      return std::string_view(value);
    }
  }
  return std::nullopt;
}

std::string_view to_string(HttpParseError error) {
  switch (error) {
    case HttpParseError::bad_status_line:
      return "bad-status-line";
    case HttpParseError::bad_header:
      return "bad-header";
    case HttpParseError::folded_header:
      return "folded-header";
    case HttpParseError::headers_too_large:
      return "headers-too-large";
    case HttpParseError::bad_content_length:
      return "bad-content-length";
    case HttpParseError::ambiguous_length:
      return "ambiguous-length";
    case HttpParseError::unsupported_transfer_encoding:
      return "unsupported-transfer-encoding";
    case HttpParseError::bad_chunk:
      return "bad-chunk";
    case HttpParseError::body_too_large:
      return "body-too-large";
    case HttpParseError::truncated:
      return "truncated";
    case HttpParseError::unexpected_upgrade:
      return "unexpected-upgrade";
  }
  return "unknown";
}

HttpResponseParser::HttpResponseParser(HttpLimits limits) : limits_(limits) {}

bool HttpResponseParser::headers_complete() const {
  return phase_ != Phase::status_line && phase_ != Phase::header_line;
}

HttpResponseParser::State HttpResponseParser::fail(HttpParseError error, std::string detail) {
  state_ = State::failed;
  error_ = error;
  error_detail_ = std::move(detail);
  return state_;
}

bool HttpResponseParser::take_line(std::string_view bytes, std::size_t& position,
                                   std::size_t limit) {
  std::size_t newline = bytes.find('\n', position);
  std::size_t end = newline == std::string_view::npos ? bytes.size() : newline;
  // Never hold more than the limit plus a CR and one byte to tell that it
  // was exceeded, however the bytes are split.
  std::size_t room = limit + 2 > line_.size() ? limit + 2 - line_.size() : 0;
  line_.append(bytes.substr(position, std::min(end - position, room)));
  if (newline == std::string_view::npos) {
    position = bytes.size();
    return false;
  }
  position = newline + 1;
  if (!line_.empty() && line_.back() == '\r') {
    line_.pop_back();
  }
  return true;
}

bool HttpResponseParser::line_too_long(bool whole, std::size_t limit) const {
  // An unfinished line may still end in the CR of its CRLF.
  return line_.size() > (whole ? limit : limit + 1);
}

HttpResponseParser::State HttpResponseParser::feed(std::string_view bytes) {
  std::size_t position = 0;
  while (position < bytes.size() && state_ == State::need_more) {
    switch (phase_) {
      case Phase::status_line:
      case Phase::header_line:
      case Phase::trailer_line: {
        std::size_t budget =
            limits_.max_header_bytes > header_bytes_ ? limits_.max_header_bytes - header_bytes_ : 0;
        bool whole = take_line(bytes, position, budget);
        if (line_too_long(whole, budget)) {
          return fail(
              HttpParseError::headers_too_large,
              "response headers exceed " + std::to_string(limits_.max_header_bytes) + " bytes");
        }
        if (!whole) {
          break;
        }
        header_bytes_ += line_.size() + 2;
        if (phase_ == Phase::status_line) {
          on_status_line();
        } else {
          on_header_line();
        }
        line_.clear();
        break;
      }
      case Phase::chunk_size_line: {
        bool whole = take_line(bytes, position, max_chunk_line);
        if (line_too_long(whole, max_chunk_line)) {
          return fail(HttpParseError::bad_chunk, "chunk size line too long");
        }
        if (whole) {
          on_chunk_size_line();
          line_.clear();
        }
        break;
      }
      case Phase::chunk_data_end: {
        bool whole = take_line(bytes, position, 0);
        if (whole ? !line_.empty() : (!line_.empty() && line_ != "\r")) {
          return fail(HttpParseError::bad_chunk, "chunk data not followed by CRLF");
        }
        if (whole) {
          line_.clear();
          phase_ = Phase::chunk_size_line;
        }
        break;
      }
      case Phase::chunk_data:
      case Phase::body_by_length: {
        std::size_t length =
            static_cast<std::size_t>(std::min<std::uint64_t>(remaining_, bytes.size() - position));
        if (append_body(bytes.substr(position, length)) == State::failed) {
          return state_;
        }
        position += length;
        remaining_ -= length;
        if (remaining_ == 0) {
          if (phase_ == Phase::chunk_data) {
            phase_ = Phase::chunk_data_end;
          } else {
            phase_ = Phase::done;
            state_ = State::complete;
          }
        }
        break;
      }
      case Phase::body_until_close:
        if (append_body(bytes.substr(position)) == State::failed) {
          return state_;
        }
        position = bytes.size();
        break;
      case Phase::done:
        return state_;
    }
  }
  return state_;
}

HttpResponseParser::State HttpResponseParser::finish() {
  if (state_ != State::need_more) {
    return state_;
  }
  switch (phase_) {
    case Phase::body_until_close:
      phase_ = Phase::done;
      state_ = State::complete;
      return state_;
    case Phase::status_line:
    case Phase::header_line:
      return fail(HttpParseError::truncated, "connection closed before the response headers ended");
    case Phase::body_by_length:
      return fail(HttpParseError::truncated,
                  "connection closed after " + std::to_string(response_.body.size()) + " of " +
                      std::to_string(response_.body.size() + remaining_) + " body bytes");
    default:
      return fail(HttpParseError::truncated, "connection closed inside the chunked body");
  }
}

HttpResponseParser::State HttpResponseParser::on_status_line() {
  // status-line = HTTP-version SP status-code SP [ reason-phrase ] (RFC 9112 §4);
  // a missing SP after the code is tolerated, as every client does.
  std::string_view line = line_;
  auto bad = [&] {
    return fail(HttpParseError::bad_status_line,
                "malformed status line: " + std::string(line.substr(0, 80)));
  };
  if (line.size() < 12 || line.substr(0, 7) != "HTTP/1." || !is_digit(line[7]) || line[8] != ' ' ||
      !is_digit(line[9]) || !is_digit(line[10]) || !is_digit(line[11])) {
    return bad();
  }
  int status = (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
  if (status < 100 || status > 599) {
    return bad();
  }
  std::string_view rest = line.substr(12);
  if (!rest.empty() && rest.front() != ' ') {
    return bad();
  }
  if (!rest.empty()) {
    rest.remove_prefix(1);
  }
  if (!is_text(rest)) {
    return bad();
  }
  response_.status = status;
  response_.reason_phrase = std::string(rest);
  phase_ = Phase::header_line;
  return state_;
}

HttpResponseParser::State HttpResponseParser::on_header_line() {
  std::string_view line = line_;
  if (line.empty()) {
    if (phase_ == Phase::trailer_line) {
      phase_ = Phase::done;
      state_ = State::complete;
      return state_;
    }
    return on_headers_end();
  }
  if (is_whitespace(line.front())) {
    return fail(HttpParseError::folded_header, "folded header line (obs-fold) rejected");
  }
  std::size_t colon = line.find(':');
  std::string_view name = line.substr(0, colon);
  if (colon == std::string_view::npos || name.empty() ||
      !std::all_of(name.begin(), name.end(), is_token_char)) {
    return fail(HttpParseError::bad_header,
                "malformed header line: " + std::string(line.substr(0, 80)));
  }
  std::string_view value = trim(line.substr(colon + 1));
  if (!is_text(value)) {
    return fail(HttpParseError::bad_header, "control character in header " + std::string(name));
  }
  if (phase_ == Phase::header_line) {
    response_.headers.emplace_back(std::string(name), std::string(value));
  }
  return state_;
}

HttpResponseParser::State HttpResponseParser::on_headers_end() {
  if (response_.status < 200) {
    if (response_.status == 101) {
      return fail(HttpParseError::unexpected_upgrade, "server switched protocols unasked");
    }
    // An interim response: the real one follows.
    response_ = HttpResponse{};
    phase_ = Phase::status_line;
    return state_;
  }

  bool has_transfer_encoding = false;
  std::vector<std::string_view> codings;
  bool has_content_length = false;
  bool bad_length = false;
  std::optional<std::uint64_t> length;
  for (const auto& [name, value] : response_.headers) {
    if (equal_ignoring_case(name, "Transfer-Encoding")) {
      has_transfer_encoding = true;
      for_each_element(value, [&](std::string_view coding) { codings.push_back(coding); });
    } else if (equal_ignoring_case(name, "Content-Length")) {
      has_content_length = true;
      // RFC 9110 §8.6: a list of identical values may stand for one.
      bool any = false;
      for_each_element(value, [&](std::string_view element) {
        any = true;
        if (element.size() > 19 || !std::all_of(element.begin(), element.end(), is_digit)) {
          bad_length = true;
          return;
        }
        std::uint64_t parsed = std::stoull(std::string(element));
        if (length && *length != parsed) {
          bad_length = true;
        }
        length = parsed;
      });
      if (!any) {
        bad_length = true;
      }
    }
  }

  if (has_transfer_encoding && has_content_length) {
    return fail(HttpParseError::ambiguous_length,
                "response has both Transfer-Encoding and Content-Length");
  }
  if (response_.status == 204 || response_.status == 304) {
    phase_ = Phase::done;
    state_ = State::complete;
    return state_;
  }
  if (has_transfer_encoding) {
    // We send no TE header, so chunked is the only coding a server may use.
    if (codings.size() != 1 || !equal_ignoring_case(codings.front(), "chunked")) {
      std::string named;
      for (auto coding : codings) {
        named += (named.empty() ? "" : ", ") + std::string(coding);
      }
      return fail(HttpParseError::unsupported_transfer_encoding,
                  "unsupported Transfer-Encoding: " + named);
    }
    phase_ = Phase::chunk_size_line;
    return state_;
  }
  if (has_content_length) {
    if (bad_length) {
      return fail(HttpParseError::bad_content_length, "malformed or conflicting Content-Length");
    }
    if (*length > limits_.max_body_bytes) {
      return fail(HttpParseError::body_too_large, "body of " + std::to_string(*length) +
                                                      " bytes exceeds the limit of " +
                                                      std::to_string(limits_.max_body_bytes));
    }
    remaining_ = *length;
    phase_ = remaining_ == 0 ? Phase::done : Phase::body_by_length;
    if (remaining_ == 0) {
      state_ = State::complete;
    }
    return state_;
  }
  phase_ = Phase::body_until_close;
  return state_;
}

HttpResponseParser::State HttpResponseParser::on_chunk_size_line() {
  // chunk = chunk-size [ chunk-ext ] CRLF (RFC 9112 §7.1); extensions skipped.
  std::string_view line = line_;
  std::size_t digits = 0;
  std::uint64_t size = 0;
  while (digits < line.size() && hex_value(line[digits]) >= 0) {
    if (size > (std::numeric_limits<std::uint64_t>::max() >> 4)) {
      return fail(HttpParseError::bad_chunk, "chunk size overflows");
    }
    size = size * 16 + static_cast<std::uint64_t>(hex_value(line[digits]));
    ++digits;
  }
  std::string_view rest = trim(line.substr(digits));
  if (digits == 0 || (!rest.empty() && rest.front() != ';') ||
      line.find('\r') != std::string_view::npos) {
    return fail(HttpParseError::bad_chunk,
                "malformed chunk size line: " + std::string(line.substr(0, 80)));
  }
  if (size > limits_.max_body_bytes - response_.body.size()) {
    return fail(
        HttpParseError::body_too_large,
        "chunked body exceeds the limit of " + std::to_string(limits_.max_body_bytes) + " bytes");
  }
  if (size == 0) {
    phase_ = Phase::trailer_line;
  } else {
    remaining_ = size;
    phase_ = Phase::chunk_data;
  }
  return state_;
}

HttpResponseParser::State HttpResponseParser::append_body(std::string_view bytes) {
  if (bytes.size() > limits_.max_body_bytes - response_.body.size()) {
    return fail(HttpParseError::body_too_large,
                "body exceeds the limit of " + std::to_string(limits_.max_body_bytes) + " bytes");
  }
  response_.body.append(bytes);
  return state_;
}

}  // namespace stsrelay::sts
