#include "smtp/dot_stuffing.hpp"

namespace stsrelay::smtp {

void DotStuffer::feed(std::string_view chunk, std::string& out) {
  out.reserve(out.size() + chunk.size() + chunk.size() / 64 + 8);
  for (char c : chunk) {
    if (pending_cr_) {
      pending_cr_ = false;
      out += "\r\n";
      at_line_start_ = true;
      if (c == '\n') {
        continue;  // CR LF: the line end already written
      }
    }
    if (c == '\r') {
      pending_cr_ = true;
      continue;
    }
    if (c == '\n') {
      out += "\r\n";
      at_line_start_ = true;
      continue;
    }
    if (at_line_start_ && c == '.') {
      out += '.';
    }
    out += c;
    at_line_start_ = false;
  }
}

void DotStuffer::finish(std::string& out) {
  if (pending_cr_ || !at_line_start_) {
    out += "\r\n";
  }
  pending_cr_ = false;
  at_line_start_ = true;
  out += ".\r\n";
}

std::string dot_stuff(std::string_view content) {
  std::string out;
  DotStuffer stuffer;
  stuffer.feed(content, out);
  stuffer.finish(out);
  return out;
}

}  // namespace stsrelay::smtp
