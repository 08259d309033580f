#include "relay/version.hpp"

#include <ares.h>
#include <asio/version.hpp>
#include <openssl/crypto.h>
#include <spdlog/version.h>
#include <sqlite3.h>

#ifndef STSRELAY_VERSION
#define STSRELAY_VERSION "unknown"
#endif

namespace stsrelay::relay {

std::string version_report() {
  // Run-time versions where the library reports them (a shared library may be
  // newer than the headers we were built with); Asio and spdlog's headers are
  // all of them that we use.
  const auto dotted = [](int major, int minor, int patch) {
    return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch);
  };
  std::string report;
  report += "stsrelay " STSRELAY_VERSION "\n";
  report += std::string(OpenSSL_version(OPENSSL_VERSION)) + "\n";
  report += "c-ares " + std::string(ares_version(nullptr)) + "\n";
  report +=
      "Asio " + dotted(ASIO_VERSION / 100000, ASIO_VERSION / 100 % 1000, ASIO_VERSION % 100) + "\n";
  report += "spdlog " + dotted(SPDLOG_VER_MAJOR, SPDLOG_VER_MINOR, SPDLOG_VER_PATCH) + "\n";
  report += "SQLite " + std::string(sqlite3_libversion()) + "\n";
  return report;
}

}  // namespace stsrelay::relay
