#include "smtp/data_reader.hpp"

#include <utility>

#include "smtp/line_break_scanner.hpp"

namespace stsrelay::smtp {

DataReader::DataReader(std::uint64_t max_size) : max_size_(max_size) {}

// The bulk of a message is line content: runs of it are stored at once, a
// CRLF that ends one together with it, so the per-octet work is only the
// memchr scan. Everything else goes through step(), one octet at a time.
DataReader::Progress DataReader::feed(std::string_view bytes) {
  Progress progress;
  if (bytes.empty() || state_ == State::finished) {
    progress.finished = state_ == State::finished;
    return progress;
  }
  const char* const begin = bytes.data();
  const char* const end = begin + bytes.size();
  const char* p = begin;
  LineBreakScanner scanner(begin, end);
  while (p != end && state_ != State::finished) {
    const char c = *p;
    const bool ordinary = c != '\r' && c != '\n';
    // An ordinary octet at a line start is content just as inside a line
    // (step() would store it and go to in_line), unless it is a leading "."
    // after CRLF.
    if (ordinary && (state_ == State::line_start_after_bare_break ||
                     (state_ == State::line_start_after_crlf && c != '.'))) {
      state_ = State::in_line;
    }
    if (state_ == State::in_line && ordinary) {
      const char* const line_break = scanner.next(p);
      if (end - line_break >= 2 && line_break[0] == '\r' && line_break[1] == '\n') {
        store(std::string_view(p, static_cast<std::size_t>(line_break + 2 - p)));
        state_ = State::line_start_after_crlf;
        p = line_break + 2;
      } else {
        store(std::string_view(p, static_cast<std::size_t>(line_break - p)));
        p = line_break;
      }
      continue;
    }
    step(c);
    ++p;
  }
  progress.consumed = static_cast<std::size_t>(p - begin);
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
