#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace stsrelay::testing {

// What the fake server answers to every request, until changed.
struct FakeHttpsResponse {
  enum class Framing { content_length, chunked, close };

  int status = 200;
  std::vector<std::pair<std::string, std::string>> headers{{"Content-Type", "text/plain"}};
  std::string body;
  Framing framing = Framing::content_length;
  std::size_t chunk_size = 16;         // chunked: bytes per chunk
  std::string chunk_extension;         // chunked: appended to each chunk size, e.g. ";name=value"
  std::string trailer;                 // chunked: a trailer line, e.g. "X-Checksum: 1"
  std::chrono::milliseconds delay{0};  // after reading the request, before answering
  std::optional<std::string> raw;      // sent verbatim instead of all of the above

  static FakeHttpsResponse policy(std::string body);  // 200 text/plain
  static FakeHttpsResponse redirect(int status, std::string location);
};

// One request as the server received it.
struct FakeHttpsRequest {
  std::string server_name;  // SNI; empty when none was sent or over plain HTTP
  std::string tls_version;  // "TLSv1.3"; empty over plain HTTP
  std::string method;
  std::string target;
  std::string version;
  std::vector<std::pair<std::string, std::string>> headers;

  std::optional<std::string> header(std::string_view name) const;  // case-insensitive
};

// An HTTPS server on a loopback address, in process but on a real socket
// (so other processes can use it too), on its own thread. Certificates come
// from the test CA (test_ca.hpp); without them it speaks plain HTTP.
class FakeHttpsServer {
 public:
  struct Options {
    std::string address = "127.0.0.1";
    std::uint16_t port = 0;           // 0: a free port, see port()
    std::filesystem::path cert_file;  // certificate chain (PEM); empty: plain HTTP
    std::filesystem::path key_file;
    bool tls11_only = false;  // offer TLS 1.1 and nothing newer
  };

  explicit FakeHttpsServer(Options options, FakeHttpsResponse response = {});
  ~FakeHttpsServer();  // stops and joins
  FakeHttpsServer(const FakeHttpsServer&) = delete;
  FakeHttpsServer& operator=(const FakeHttpsServer&) = delete;

  const std::string& address() const;
  std::uint16_t port() const;

  void set_response(FakeHttpsResponse response);
  std::vector<FakeHttpsRequest> requests() const;
  std::size_t connections() const;  // accepted, including failed handshakes

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace stsrelay::testing
