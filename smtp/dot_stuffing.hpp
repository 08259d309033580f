#pragma once

#include <string>
#include <string_view>

namespace stsrelay::smtp {

// The content as DATA carries it (RFC 5321 §4.5.2): every line beginning
// with "." gets another, bare CR or LF become CRLF, the content ends with
// CRLF, and "." CRLF is appended.
std::string dot_stuff(std::string_view content);

// The same, a piece at a time, so that a large message goes out in chunks
// without a stuffed copy of the whole of it: feed() each piece in order,
// then finish() once for the end (the missing CRLF, if any, and ".").
class DotStuffer {
 public:
  // Appends the stuffed form of chunk to out.
  void feed(std::string_view chunk, std::string& out);
  void finish(std::string& out);

 private:
  bool at_line_start_ = true;
  bool pending_cr_ = false;  // a CR whose LF may come with the next chunk
};

}  // namespace stsrelay::smtp
