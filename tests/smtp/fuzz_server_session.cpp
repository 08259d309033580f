// libFuzzer entry for the session core (clang only, see CMakeLists.txt):
// the first byte chooses chunk sizes, the rest is what the client sends.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "smtp/server_session.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using stsrelay::smtp::ServerSession;
  if (size == 0) {
    return 0;
  }
  stsrelay::smtp::ServerSessionSettings settings;
  settings.hostname = "fuzz.test";
  settings.max_message_size = 4096;
  settings.max_recipients = 4;
  settings.starttls_offered = true;
  settings.new_message_id = [] { return "FUZZ"; };
  ServerSession session(settings, "192.0.2.1");
  session.greet();
  const std::size_t chunk = 1 + data[0] % 64;
  std::string_view input(reinterpret_cast<const char*>(data + 1), size - 1);
  while (!input.empty()) {
    session.receive(input.substr(0, chunk));
    input.remove_prefix(std::min(chunk, input.size()));
    bool more = true;
    while (more) {
      switch (session.next()) {
        case ServerSession::Event::message_ready:
          session.take_message();
          session.message_queued();
          break;
        case ServerSession::Event::start_tls:
          session.tls_started({"TLSv1.3", "TLS_AES_128_GCM_SHA256"});
          break;
        case ServerSession::Event::need_input:
          more = false;
          break;
        case ServerSession::Event::close:
          return 0;
      }
    }
    session.take_output();
  }
  return 0;
}
