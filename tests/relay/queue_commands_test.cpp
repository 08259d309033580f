#include "relay/queue_commands.hpp"

#include <fstream>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "queue/store.hpp"
#include "relay/cli.hpp"
#include "tests/support/temp_dir.hpp"

namespace stsrelay::relay {
namespace {

using namespace std::chrono_literals;

// 2026-12-04T17:40:33Z
const queue::TimePoint arrival = queue::TimePoint(std::chrono::seconds(1796406033));

class QueueCommands : public ::testing::Test {
 protected:
  QueueCommands() {
    config_ = parse_config("").value();
    config_.queue.directory = dir_.path() / "spool";
    auto store = queue::Store::open(config_.queue.directory);
    EXPECT_TRUE(store) << store.error();
    std::vector<queue::NewMessage> messages(2);
    messages[0].id = first_id;
    messages[0].arrival = arrival;
    messages[0].sender = "a@b.example";
    messages[0].recipients = {"x@y.example", "z@w.example"};
    messages[0].client_address = "127.0.0.1";
    messages[0].content = "Subject: one\r\n\r\nbody\r\n";
    messages[1].id = second_id;
    messages[1].arrival = arrival + 1s;
    messages[1].sender = "";
    messages[1].recipients = {"bounce@c.example"};
    messages[1].client_address = "::1";
    messages[1].content = "Subject: two\r\n\r\n";
    const auto inserted = store->insert(messages);
    EXPECT_TRUE(inserted) << inserted.error();
  }

  struct Outcome {
    int status;
    std::string out;
    std::string err;
  };

  template <typename Command>
  Outcome run(Command command) {
    std::ostringstream out;
    std::ostringstream err;
    const int status = command(out, err);
    return {status, out.str(), err.str()};
  }
  Outcome list(bool json) {
    return run([&](auto& out, auto& err) { return queue_list(config_, json, out, err); });
  }

  static constexpr const char* first_id = "01K1TA4KPPHP";
  static constexpr const char* second_id = "01K1TA4KPPHQ";
  testing::TempDir dir_;
  Config config_;
};

TEST_F(QueueCommands, ListShowsOneLinePerMessage) {
  const auto result = list(false);
  ASSERT_EQ(result.status, 0) << result.err;
  std::istringstream lines(result.out);
  std::string first;
  std::string second;
  std::getline(lines, first);
  std::getline(lines, second);
  EXPECT_TRUE(first.starts_with(
      "01K1TA4KPPHP 2026-12-04T17:40:33Z 22 <a@b.example> -> <x@y.example> queued"))
      << first;
  EXPECT_NE(first.find("; <z@w.example> queued"), std::string::npos) << first;
  EXPECT_TRUE(second.starts_with("01K1TA4KPPHQ 2026-12-04T17:40:34Z 16 <> -> <bounce@c.example>"))
      << second;
  EXPECT_FALSE(lines.peek() != EOF) << result.out;
}

TEST_F(QueueCommands, ListJsonHasTheSpecFields) {
  const auto result = list(true);
  ASSERT_EQ(result.status, 0) << result.err;
  const auto array = nlohmann::json::parse(result.out);
  ASSERT_TRUE(array.is_array());
  ASSERT_EQ(array.size(), 2u);
  const auto& message = array[0];
  EXPECT_EQ(message["id"], first_id);
  EXPECT_EQ(message["sender"], "a@b.example");
  EXPECT_EQ(message["size"], 22);
  EXPECT_EQ(message["arrival"], "2026-12-04T17:40:33Z");
  EXPECT_EQ(message["held"], false);
  ASSERT_EQ(message["recipients"].size(), 2u);
  const auto& recipient = message["recipients"][0];
  EXPECT_EQ(recipient["address"], "x@y.example");
  EXPECT_EQ(recipient["status"], "queued");
  EXPECT_EQ(recipient["attempts"], 0);
  EXPECT_TRUE(recipient["last_error"].is_null());
  EXPECT_TRUE(recipient.contains("next_attempt"));
  EXPECT_EQ(array[1]["sender"], "");
}

TEST_F(QueueCommands, HoldReleaseDelete) {
  auto held = run([&](auto& out, auto& err) { return queue_hold(config_, first_id, out, err); });
  EXPECT_EQ(held.status, 0) << held.err;
  EXPECT_EQ(held.out, std::string(first_id) + ": held\n");
  EXPECT_EQ(nlohmann::json::parse(list(true).out)[0]["held"], true);
  EXPECT_NE(list(false).out.find("<a@b.example> held ->"), std::string::npos);

  auto released =
      run([&](auto& out, auto& err) { return queue_release(config_, first_id, out, err); });
  EXPECT_EQ(released.status, 0) << released.err;
  EXPECT_EQ(released.out, std::string(first_id) + ": released\n");
  EXPECT_EQ(nlohmann::json::parse(list(true).out)[0]["held"], false);

  auto deleted =
      run([&](auto& out, auto& err) { return queue_delete(config_, first_id, out, err); });
  EXPECT_EQ(deleted.status, 0) << deleted.err;
  EXPECT_EQ(deleted.out, std::string(first_id) + ": deleted\n");
  const auto remaining = nlohmann::json::parse(list(true).out);
  ASSERT_EQ(remaining.size(), 1u);
  EXPECT_EQ(remaining[0]["id"], second_id);

  auto again = run([&](auto& out, auto& err) { return queue_delete(config_, first_id, out, err); });
  EXPECT_EQ(again.status, 1);
  EXPECT_EQ(again.err, std::string("stsrelay: no message with id ") + first_id + "\n");
}

TEST_F(QueueCommands, LowerCaseIdsAreAccepted) {
  auto held =
      run([&](auto& out, auto& err) { return queue_hold(config_, "01k1ta4kpphp", out, err); });
  EXPECT_EQ(held.status, 0) << held.err;
}

TEST_F(QueueCommands, UnknownAndMalformedIds) {
  for (const auto& command : {queue_delete, queue_hold, queue_release}) {
    auto unknown =
        run([&](auto& out, auto& err) { return command(config_, "0000000000AB", out, err); });
    EXPECT_EQ(unknown.status, 1);
    EXPECT_EQ(unknown.err, "stsrelay: no message with id 0000000000AB\n");
    auto malformed =
        run([&](auto& out, auto& err) { return command(config_, "../../etc\r\n", out, err); });
    EXPECT_EQ(malformed.status, 2);
    EXPECT_EQ(malformed.err.find_first_of("\r"), std::string::npos);
  }
}

TEST_F(QueueCommands, ThroughTheCommandLine) {
  const auto file = dir_.path() / "stsrelay.toml";
  std::ofstream(file) << to_toml(config_);
  std::ostringstream out;
  std::ostringstream err;
  EXPECT_EQ(run_cli({"queue", "hold", second_id, "--config", file.string()}, out, err), 0)
      << err.str();
  EXPECT_EQ(run_cli({"--config", file.string(), "queue", "list", "--json"}, out, err), 0)
      << err.str();
  EXPECT_NE(out.str().find("\"held\": true"), std::string::npos) << out.str();
}

}  // namespace
}  // namespace stsrelay::relay
