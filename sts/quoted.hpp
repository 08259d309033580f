#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace stsrelay::sts {

// Text from the network as people can read it in an error: in double
// quotes, non-printable bytes as \xHH, cut after max_length bytes ("...").
std::string quoted(std::string_view text, std::size_t max_length);

}  // namespace stsrelay::sts
