#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace stsrelay::testing {

// A certificate authority made at test time, issuing leaf certificates for
// loopback test peers. Everything is written as PEM under `directory`.
class TestCa {
 public:
  struct Leaf {
    std::filesystem::path cert_file;  // leaf then CA, as servers send it
    std::filesystem::path key_file;
  };

  struct LeafOptions {
    std::vector<std::string> dns_names;  // subjectAltName DNS entries; the first is also the CN
    std::chrono::seconds not_before_offset = std::chrono::hours(-1);
    std::chrono::seconds not_after_offset = std::chrono::hours(24);
  };

  explicit TestCa(std::filesystem::path directory, std::string name = "stsrelay test CA");
  ~TestCa();
  TestCa(const TestCa&) = delete;
  TestCa& operator=(const TestCa&) = delete;

  const std::filesystem::path& ca_file() const { return ca_file_; }
  Leaf issue(const std::string& file_stem, const LeafOptions& options);

 private:
  struct Keys;
  std::unique_ptr<Keys> keys_;
  std::filesystem::path directory_;
  std::filesystem::path ca_file_;
  long serial_ = 1;
};

}  // namespace stsrelay::testing
