// The machine's physical ceilings for a durable mail relay, measured now, so
// that benchmark figures can be read against them.
//
//   machine_limits [--dir DIR] [--seconds 3] [--key ecdsa-p256|rsa-2048]
//                  [--skip-files] [--skip-tls]
//
// Prints one JSON object per line:
//
//   {"measure":"durable_file_writes","dir":"/var/tmp","files":912,"seconds":3.002,
//    "files_per_s":303.8,"mean_ms":3.291}
//     one thread: create a temporary file in DIR, write 4 KiB, fsync, close,
//     rename it to its final name, fsync DIR. What a spool needs per message.
//   {"measure":"tls_full_handshakes","key":"ecdsa-p256","protocol":"TLSv1.3",
//    "handshakes":2345,"seconds":3.001,"handshakes_per_s":781.4,
//    "handshakes_per_cpu_s":1702.3,"client_cpu_ms":0.373,"server_cpu_ms":0.184,
//    "server_only_per_s":5447.4}
//     one thread plays both ends over a socketpair, so handshakes_per_s is
//     what one core does for client and server together (less when other
//     processes take the core; handshakes_per_cpu_s divides by the thread's
//     CPU time instead, so it is not). The CPU time of each side's
//     SSL_do_handshake calls is measured separately (CLOCK_THREAD_CPUTIME_ID):
//     server_only_per_s = 1000 / server_cpu_ms is one core serving only.
//     No resumption: no tickets, no session cache. The client verifies the
//     certificate chain and host name, as a relay's client does.
//   {"measure":"tls_resumed_handshakes",...}  the same with TLS 1.3 ticket
//     resumption (psk_dhe_ke: a fresh ECDHE, no certificate).

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>
#include <sys/socket.h>
#include <system_error>
#include <time.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

[[noreturn]] void fail(const std::string& what) {
  std::cerr << "machine_limits: " << what << '\n';
  std::exit(1);
}

[[noreturn]] void fail_errno(const std::string& what) {
  fail(what + ": " + std::strerror(errno));
}

[[noreturn]] void fail_openssl(const std::string& what) {
  char text[256] = "unknown error";
  if (const auto code = ERR_get_error(); code != 0) {
    ERR_error_string_n(code, text, sizeof text);
  }
  fail(what + ": " + text);
}

// A JSON string literal: a path may hold quotes or backslashes.
std::string json_string(const std::string& text) {
  std::string quoted = "\"";
  for (const char c : text) {
    if (c == '"' || c == '\\') {
      quoted += '\\';
      quoted += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      quoted += fmt::format("\\u{:04x}", static_cast<int>(c));
    } else {
      quoted += c;
    }
  }
  return quoted + '"';
}

// --- durable small-file writes ---------------------------------------------

void measure_durable_writes(const std::filesystem::path& directory, double seconds) {
  std::string pattern = (directory / "machine_limits.XXXXXX").string();
  if (::mkdtemp(pattern.data()) == nullptr) {
    fail_errno("mkdtemp in " + directory.string());
  }
  const std::filesystem::path work = pattern;
  const int directory_fd = ::open(work.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (directory_fd < 0) {
    fail_errno("open " + work.string());
  }
  const std::string block(4096, 'x');
  std::uint64_t files = 0;
  const auto start = Clock::now();
  const auto deadline = start + std::chrono::duration<double>(seconds);
  while (Clock::now() < deadline) {
    const auto temporary = work / fmt::format("tmp.{}", files);
    const auto final_name = work / fmt::format("file.{}", files);
    const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
      fail_errno("create " + temporary.string());
    }
    if (::write(fd, block.data(), block.size()) != static_cast<ssize_t>(block.size())) {
      fail_errno("write " + temporary.string());
    }
    if (::fsync(fd) != 0) {
      fail_errno("fsync " + temporary.string());
    }
    ::close(fd);
    if (::rename(temporary.c_str(), final_name.c_str()) != 0) {
      fail_errno("rename " + temporary.string());
    }
    if (::fsync(directory_fd) != 0) {
      fail_errno("fsync " + work.string());
    }
    ++files;
  }
  const double elapsed = seconds_since(start);
  ::close(directory_fd);
  std::error_code ignored;
  std::filesystem::remove_all(work, ignored);
  std::cout << fmt::format(
                   R"({{"measure":"durable_file_writes","dir":{},"files":{},"seconds":{:.3f},)"
                   R"("files_per_s":{:.1f},"mean_ms":{:.3f}}})",
                   json_string(std::filesystem::absolute(directory).string()), files, elapsed,
                   static_cast<double>(files) / elapsed,
                   files > 0 ? 1000.0 * elapsed / static_cast<double>(files) : 0.0)
            << std::endl;
}

// --- TLS handshakes ----------------------------------------------------------

template <auto free_function>
struct Deleter {
  template <typename T>
  void operator()(T* pointer) const {
    free_function(pointer);
  }
};
using KeyPtr = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY_free>>;
using CertificatePtr = std::unique_ptr<X509, Deleter<X509_free>>;
using ContextPtr = std::unique_ptr<SSL_CTX, Deleter<SSL_CTX_free>>;
using SslPtr = std::unique_ptr<SSL, Deleter<SSL_free>>;
using SessionPtr = std::unique_ptr<SSL_SESSION, Deleter<SSL_SESSION_free>>;

constexpr const char* host_name = "mx.limits.test";

KeyPtr make_key(const std::string& kind) {
  EVP_PKEY* key = nullptr;
  if (kind == "ecdsa-p256") {
    key = EVP_EC_gen("P-256");
  } else if (kind == "rsa-2048") {
    key = EVP_RSA_gen(2048);
  } else {
    fail("unknown key type " + kind);
  }
  if (key == nullptr) {
    fail_openssl("generating a " + kind + " key");
  }
  return KeyPtr(key);
}

CertificatePtr make_self_signed(EVP_PKEY* key) {
  CertificatePtr certificate(X509_new());
  X509_set_version(certificate.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(certificate.get()), 1);
  X509_gmtime_adj(X509_getm_notBefore(certificate.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(certificate.get()), 86400);
  X509_set_pubkey(certificate.get(), key);
  X509_NAME* name = X509_get_subject_name(certificate.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(host_name), -1, -1, 0);
  X509_set_issuer_name(certificate.get(), name);
  X509V3_CTX context;
  X509V3_set_ctx_nodb(&context);
  X509V3_set_ctx(&context, certificate.get(), certificate.get(), nullptr, nullptr, 0);
  const std::string alt_name = std::string("DNS:") + host_name;
  X509_EXTENSION* extension =
      X509V3_EXT_conf_nid(nullptr, &context, NID_subject_alt_name, alt_name.c_str());
  if (extension == nullptr) {
    fail_openssl("subjectAltName");
  }
  X509_add_ext(certificate.get(), extension, -1);
  X509_EXTENSION_free(extension);
  if (X509_sign(certificate.get(), key, EVP_sha256()) == 0) {
    fail_openssl("signing the certificate");
  }
  return certificate;
}

struct Contexts {
  ContextPtr server;
  ContextPtr client;
};

Contexts make_contexts(EVP_PKEY* key, X509* certificate, bool resumption) {
  Contexts contexts{ContextPtr(SSL_CTX_new(TLS_server_method())),
                    ContextPtr(SSL_CTX_new(TLS_client_method()))};
  if (!contexts.server || !contexts.client) {
    fail_openssl("SSL_CTX_new");
  }
  for (auto* context : {contexts.server.get(), contexts.client.get()}) {
    SSL_CTX_set_min_proto_version(context, TLS1_3_VERSION);
    SSL_CTX_set_max_proto_version(context, TLS1_3_VERSION);
  }
  if (SSL_CTX_use_certificate(contexts.server.get(), certificate) != 1 ||
      SSL_CTX_use_PrivateKey(contexts.server.get(), key) != 1) {
    fail_openssl("server certificate");
  }
  // The session cache stays off on both sides: resumption, when measured, is
  // by stateless tickets, which the client keeps itself.
  SSL_CTX_set_session_cache_mode(contexts.server.get(), SSL_SESS_CACHE_OFF);
  SSL_CTX_set_session_cache_mode(contexts.client.get(), SSL_SESS_CACHE_OFF);
  if (resumption) {
    SSL_CTX_set_num_tickets(contexts.server.get(), 1);
  } else {
    SSL_CTX_set_options(contexts.server.get(), SSL_OP_NO_TICKET);
    SSL_CTX_set_num_tickets(contexts.server.get(), 0);
  }
  if (X509_STORE_add_cert(SSL_CTX_get_cert_store(contexts.client.get()), certificate) != 1) {
    fail_openssl("client trust store");
  }
  SSL_CTX_set_verify(contexts.client.get(), SSL_VERIFY_PEER, nullptr);
  return contexts;
}

double thread_cpu_seconds() {
  timespec now{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
  return static_cast<double>(now.tv_sec) + static_cast<double>(now.tv_nsec) / 1e9;
}

struct HandshakeResult {
  SessionPtr session;  // the client's, when the server sent a ticket
  bool resumed = false;
  double client_cpu = 0;
  double server_cpu = 0;
};

// One handshake over a fresh socketpair, both ends driven in turn by this
// thread (non-blocking), so only one core is used.
HandshakeResult handshake(const Contexts& contexts, SSL_SESSION* resume_with) {
  int ends[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, ends) != 0) {
    fail_errno("socketpair");
  }
  SslPtr client(SSL_new(contexts.client.get()));
  SslPtr server(SSL_new(contexts.server.get()));
  SSL_set_fd(client.get(), ends[0]);
  SSL_set_fd(server.get(), ends[1]);
  SSL_set_connect_state(client.get());
  SSL_set_accept_state(server.get());
  SSL_set_tlsext_host_name(client.get(), host_name);
  SSL_set1_host(client.get(), host_name);
  if (resume_with != nullptr) {
    SSL_set_session(client.get(), resume_with);
  }

  HandshakeResult result;
  const auto step = [](SSL* ssl, double& cpu) {
    const double before = thread_cpu_seconds();
    const int done = SSL_do_handshake(ssl);
    cpu += thread_cpu_seconds() - before;
    if (done == 1) {
      return true;
    }
    const int error = SSL_get_error(ssl, done);
    if (error != SSL_ERROR_WANT_READ && error != SSL_ERROR_WANT_WRITE) {
      fail_openssl("handshake");
    }
    return false;
  };
  bool client_done = false;
  bool server_done = false;
  for (int turns = 0; !(client_done && server_done); ++turns) {
    if (turns > 100) {
      fail("handshake did not finish");
    }
    if (!client_done) {
      client_done = step(client.get(), result.client_cpu);
    }
    if (!server_done) {
      server_done = step(server.get(), result.server_cpu);
    }
  }
  if (SSL_get_verify_result(client.get()) != X509_V_OK) {
    fail("the client did not verify the certificate");
  }
  result.resumed = SSL_session_reused(client.get()) == 1;
  if (resume_with == nullptr && SSL_CTX_get_num_tickets(contexts.server.get()) > 0) {
    // TLS 1.3 tickets follow the handshake: the client reads them.
    char byte = 0;
    const double before = thread_cpu_seconds();
    (void)SSL_read(client.get(), &byte, 1);
    result.client_cpu += thread_cpu_seconds() - before;
    result.session.reset(SSL_get1_session(client.get()));
  }
  // Freeing a connection that was not shut down marks its session as not
  // resumable; the exchange of close_notify alerts is no part of a handshake.
  SSL_set_shutdown(client.get(), SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
  SSL_set_shutdown(server.get(), SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
  client.reset();
  server.reset();
  ::close(ends[0]);
  ::close(ends[1]);
  ERR_clear_error();
  return result;
}

void measure_handshakes(const std::string& key_kind, double seconds, bool resumption) {
  const auto key = make_key(key_kind);
  const auto certificate = make_self_signed(key.get());
  const auto contexts = make_contexts(key.get(), certificate.get(), resumption);

  SessionPtr ticket;
  if (resumption) {
    ticket = handshake(contexts, nullptr).session;
    if (!ticket || SSL_SESSION_is_resumable(ticket.get()) != 1) {
      fail("no resumable session after the first handshake");
    }
  }
  std::uint64_t handshakes = 0;
  double client_cpu = 0;
  double server_cpu = 0;
  const auto start = Clock::now();
  const double cpu_start = thread_cpu_seconds();
  const auto deadline = start + std::chrono::duration<double>(seconds);
  while (Clock::now() < deadline) {
    const auto result = handshake(contexts, ticket.get());
    if (result.resumed != resumption) {
      fail(resumption ? "a handshake was not resumed" : "a handshake was resumed");
    }
    client_cpu += result.client_cpu;
    server_cpu += result.server_cpu;
    ++handshakes;
  }
  const double elapsed = seconds_since(start);
  const double cpu = thread_cpu_seconds() - cpu_start;
  const double count = static_cast<double>(handshakes);
  std::cout << fmt::format(
                   R"({{"measure":"{}","key":"{}","protocol":"TLSv1.3","handshakes":{},)"
                   R"("seconds":{:.3f},"handshakes_per_s":{:.1f},"handshakes_per_cpu_s":{:.1f},)"
                   R"("client_cpu_ms":{:.3f},)"
                   R"("server_cpu_ms":{:.3f},"server_only_per_s":{:.1f}}})",
                   resumption ? "tls_resumed_handshakes" : "tls_full_handshakes", key_kind,
                   handshakes, elapsed, count / elapsed, count / cpu, 1000 * client_cpu / count,
                   1000 * server_cpu / count, count / server_cpu)
            << std::endl;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Measures durable small-file writes/s and TLS handshakes/s on this machine"};
  std::filesystem::path directory = ".";
  double seconds = 3;
  std::string key = "ecdsa-p256";
  bool skip_files = false;
  bool skip_tls = false;
  app.add_option("--dir", directory, "directory for the file writes (the spool's file system)")
      ->capture_default_str();
  app.add_option("--seconds", seconds, "length of each measurement")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--key", key, "server key type")
      ->capture_default_str()
      ->check(CLI::IsMember({"ecdsa-p256", "rsa-2048"}));
  app.add_flag("--skip-files", skip_files, "do not measure file writes");
  app.add_flag("--skip-tls", skip_tls, "do not measure TLS handshakes");
  CLI11_PARSE(app, argc, argv);

  if (!skip_files) {
    measure_durable_writes(directory, seconds);
  }
  if (!skip_tls) {
    measure_handshakes(key, seconds, false);
    measure_handshakes(key, seconds, true);
  }
  return 0;
}
