#include "smtp/data_reader.hpp"

#include <algorithm>
#include <utility>

namespace stsrelay::smtp {

DataReader::DataReader(std::uint64_t max_size) : max_size_(max_size) {}

DataReader::Progress DataReader::feed(std::string_view bytes) {
  Progress progress;
  while (progress.consumed < bytes.size() && state_ != State::finished) {
    if (state_ == State::in_line) {
      // The bulk of a message: copy the rest of the line in one go.
      const std::string_view rest = bytes.substr(progress.consumed);
      const std::size_t run = std::min(rest.find_first_of("\r\n"), rest.size());
      if (run > 0) {
        store(rest.substr(0, run));
        progress.consumed += run;
        continue;
      }
    }
    step(bytes[progress.consumed]);
    ++progress.consumed;
  }
  progress.finished = state_ == State::finished;
  return progress;
}

void DataReader::step(char c) {
  switch (state_) {
    case State::finished:
      return;
    case State::dot:
      if (c == '\r') {
        state_ = State::dot_cr;
        return;
      }
      if (c == '\n') {
        // <CRLF>.<LF>: a "." line, but not the end of data.
        store(".");
        store_line_break();
        state_ = State::line_start_after_bare_break;
        return;
      }
      // A stuffed line: its first "." is dropped and c is ordinary content.
      store_octet(c);
      state_ = State::in_line;
      return;
    case State::dot_cr:
      if (c == '\n') {
        state_ = State::finished;
        return;
      }
      // <CRLF>.<CR> then something else: a "." line ended by a bare CR.
      store(".");
      store_line_break();
      state_ = State::line_start_after_bare_break;
      step(c);
      return;
    case State::cr:
      if (c == '\n') {
        store_line_break();
        state_ = State::line_start_after_crlf;
        return;
      }
      store_line_break();  // a bare CR
      state_ = State::line_start_after_bare_break;
      step(c);
      return;
    case State::line_start_after_crlf:
      if (c == '.') {
        state_ = State::dot;
        return;
      }
      [[fallthrough]];
    case State::line_start_after_bare_break:
    case State::in_line:
      if (c == '\r') {
        state_ = State::cr;
      } else if (c == '\n') {
        store_line_break();  // a bare LF
        state_ = State::line_start_after_bare_break;
      } else {
        store_octet(c);
        state_ = State::in_line;
      }
      return;
  }
}

void DataReader::store(std::string_view bytes) {
  size_ += bytes.size();
  if (too_big_) {
    return;
  }
  if (size_ > max_size_) {
    too_big_ = true;
    std::string().swap(content_);
    return;
  }
  content_.append(bytes);
}

std::string DataReader::take_content() {
  if (too_big_) {
    return {};
  }
  // Only when the data ended (or was cut) in the middle of a line.
  if (!content_.empty() && !content_.ends_with("\r\n")) {
    content_ += "\r\n";
  }
  return std::exchange(content_, {});
}

}  // namespace stsrelay::smtp
