#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace stsrelay::smtp {

// Streaming parser of the DATA content (RFC 5321 §4.1.1.4, §4.5.2), usable on
// its own: feed() it bytes as they arrive, in chunks of any size (down to one
// byte); it says how many it consumed and whether the end of data was reached.
// Bytes after the end of data are not consumed: they are the next commands.
//
// Smuggling policy (CVE-2023-51764 class): NORMALISE.
//  - The data ends only at <CRLF>.<CRLF>. The first CRLF may be the one that
//    ended the DATA command, so ".\r\n" right after the 354 is an empty message.
//  - A bare LF and a bare CR inside the data each count as a line break and are
//    stored as CRLF. The stored content therefore only ever holds CRLF line
//    ends, so no next hop can find a different end of data in it, whatever its
//    own rules about bare CR or LF.
//  - A "." line next to a bare CR or LF does not end the data: <LF>.<LF>,
//    <LF>.<CRLF>, <CR>.<CR>, <CRLF>.<LF>, <CRLF>.<CR> are all content, stored
//    as ".\r\n" (the sender dot-stuffs it again).
//  - Dot-unstuffing removes the leading "." of a line that began after a real
//    CRLF. A line that began after a bare CR or LF is not a line to an RFC
//    5321 client, which therefore did not stuff it: its "." is kept.
//
// Storage is bounded: once the stored content would exceed max_size the reader
// stops storing but keeps parsing up to the end of data, and too_big() says so.
class DataReader {
 public:
  explicit DataReader(std::uint64_t max_size);

  struct Progress {
    std::size_t consumed = 0;
    bool finished = false;  // <CRLF>.<CRLF> was reached; consumed ends with it
  };
  Progress feed(std::string_view bytes);

  bool finished() const { return state_ == State::finished; }
  bool too_big() const { return too_big_; }
  // Octets of content after unstuffing and normalising, counted even past the limit.
  std::uint64_t size() const { return size_; }

  // The content, every line ending in CRLF (a final CRLF is added if the data
  // did not end with one); empty when too_big().
  std::string take_content();

 private:
  enum class State {
    line_start_after_crlf,  // also the state right after the DATA command
    line_start_after_bare_break,
    in_line,
    cr,      // a CR whose LF has not come yet
    dot,     // "." at the start of a line that began after CRLF
    dot_cr,  // CRLF "." CR: an LF now ends the data
    finished,
  };

  void store(std::string_view bytes);
  void store_line_break() { store("\r\n"); }
  // One content octet that is neither CR nor LF nor a stuffing dot.
  void store_octet(char c) { store(std::string_view(&c, 1)); }
  void step(char c);

  std::uint64_t max_size_;
  std::uint64_t size_ = 0;
  bool too_big_ = false;
  State state_ = State::line_start_after_crlf;
  std::string content_;
};

}  // namespace stsrelay::smtp
