#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "smtp/received_message.hpp"
#include "smtp/reply.hpp"

namespace stsrelay::smtp {

struct ServerSessionSettings {
  std::string hostname;  // announced in the greeting, EHLO and the Received header
  std::uint64_t max_message_size = 52428800;
  std::size_t max_recipients = 1000;
  bool starttls_offered = false;  // a certificate is configured
  std::size_t max_errors = 20;    // client errors before the session is closed with 421
  // Assigns the queue id of a message when its DATA begins (it appears in the
  // Received header and in the final 250 reply).
  std::function<std::string()> new_message_id;
  std::function<std::chrono::system_clock::time_point()> now = [] {
    return std::chrono::system_clock::now();
  };
};

struct TlsDetails {
  std::string version;  // "TLSv1.3"
  std::string cipher;   // "TLS_AES_256_GCM_SHA384"
};

// The socket-free core of one inbound SMTP session (RFC 5321 with PIPELINING,
// SIZE, 8BITMIME, SMTPUTF8, ENHANCEDSTATUSCODES and STARTTLS).
//
// The I/O layer feeds it the bytes it reads and writes out what it produces:
//
//   session.greet();
//   loop:
//     switch (session.next()) {
//       case need_input:    write take_output(); read; receive(bytes)
//       case message_ready: take_message(); commit it; message_queued() or message_failed()
//       case start_tls:     write take_output(); TLS handshake; tls_started(...)
//       case close:         write take_output(); close
//     }
//
// Input that arrives after a STARTTLS command and before the handshake is
// discarded by the session, never interpreted (CVE-2011-0411). DATA ends only
// at <CRLF>.<CRLF>; a bare CR or bare LF inside the data is stored as CRLF, so
// nothing this relay passes on can be read as a different end of data by the
// next hop (CVE-2023-51764).
class ServerSession {
 public:
  enum class Event { need_input, message_ready, start_tls, close };

  ServerSession(ServerSessionSettings settings, std::string client_address);
  ~ServerSession();
  ServerSession(ServerSession&&) noexcept;
  ServerSession& operator=(ServerSession&&) noexcept;

  void greet();
  void receive(std::string_view bytes);
  Event next();

  std::string take_output();
  ReceivedMessage take_message();

  // The message handed out by message_ready is durably queued: reply 250 with its id.
  void message_queued();
  // It could not be queued: reply 451 4.3.0 (the client keeps the message and retries).
  void message_failed(std::string_view reason);
  void tls_started(TlsDetails tls);
  // The client was idle too long: 421 4.4.2 and close.
  void timed_out();
  // The relay is stopping: 421 4.3.2 and close.
  void shutting_down();

  bool in_data() const;
  bool closed() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace stsrelay::smtp
