#include "relay/cli.hpp"

#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "relay/config.hpp"
#include "tests/support/temp_dir.hpp"

namespace stsrelay::relay {
namespace {

struct Outcome {
  int status;
  std::string out;
  std::string err;
};

Outcome cli(std::vector<std::string> args) {
  std::ostringstream out;
  std::ostringstream err;
  const int status = run_cli(args, out, err);
  return {status, out.str(), err.str()};
}

class Cli : public ::testing::Test {
 protected:
  std::string write_config(const std::string& text) {
    const auto file = dir_.path() / ("config" + std::to_string(files_++) + ".toml");
    std::ofstream(file) << text;
    return file.string();
  }
  std::string queue_config() {
    return write_config("[queue]\ndirectory = \"" + (dir_.path() / "spool").string() + "\"\n");
  }

  testing::TempDir dir_;
  int files_ = 0;
};

struct UsageCase {
  std::vector<std::string> args;
  const char* err_contains;
};

class CliUsage : public ::testing::TestWithParam<UsageCase> {};

TEST_P(CliUsage, ExitsTwoWithAMessage) {
  const auto result = cli(GetParam().args);
  EXPECT_EQ(result.status, 2) << result.err;
  EXPECT_NE(result.err.find(GetParam().err_contains), std::string::npos) << result.err;
  EXPECT_TRUE(result.err.starts_with("stsrelay: ")) << result.err;
}

INSTANTIATE_TEST_SUITE_P(
    Table, CliUsage,
    ::testing::Values(
        UsageCase{{}, "subcommand is required"}, UsageCase{{"bogus"}, "unknown command \"bogus\""},
        UsageCase{{"--bogus"}, "--bogus"}, UsageCase{{"run", "--bogus"}, "--bogus"},
        UsageCase{{"run", "extra"}, "extra"}, UsageCase{{"queue"}, "subcommand is required"},
        UsageCase{{"queue", "bogus"}, "unknown command \"bogus\""},
        UsageCase{{"queue", "delete"}, "ID is required"},
        UsageCase{{"queue", "hold", "A", "B"}, "B"}, UsageCase{{"queue", "list", "--jsn"}, "--jsn"},
        UsageCase{{"sts-check"}, "DOMAIN is required"},
        UsageCase{{"check-config", "--config"}, "--config"},
        UsageCase{{"check-config", "--config", "/nonexistent/stsrelay.toml"},
                  "stsrelay: config: /nonexistent/stsrelay.toml: No such file"},
        UsageCase{{"queue", "delete", "not-an-id"}, "is not a queue id"},
        UsageCase{{"queue", "hold", "0123456789AI"}, "is not a queue id"},
        UsageCase{{"queue", "release", ""}, "is not a queue id"}));

TEST(CliHelp, ExitsZero) {
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"--help"}, {"queue", "--help"}, {"queue", "list", "--help"}, {"sts-check", "-h"}}) {
    const auto result = cli(args);
    EXPECT_EQ(result.status, 0);
    EXPECT_NE(result.out.find("Usage: stsrelay"), std::string::npos) << result.out;
  }
}

TEST(CliVersion, PrintsOursAndTheLibraries) {
  const auto result = cli({"version"});
  EXPECT_EQ(result.status, 0) << result.err;
  EXPECT_TRUE(result.out.starts_with("stsrelay 0.1.0\n")) << result.out;
  for (const char* library :
       {"\nOpenSSL 3.", "\nc-ares 1.", "\nAsio 1.", "\nspdlog 1.", "\nSQLite 3."}) {
    EXPECT_NE(result.out.find(library), std::string::npos) << library << " in " << result.out;
  }
  EXPECT_EQ(cli({"--version"}).out, result.out);
}

TEST_F(Cli, CheckConfigPrintsTheEffectiveConfig) {
  const auto file = write_config("[listen]\nmax_recipients = 7\n[log]\nformat = \"json\"\n");
  const auto result = cli({"check-config", "--config", file});
  ASSERT_EQ(result.status, 0) << result.err;
  EXPECT_EQ(result.err, "");
  const auto printed = parse_config(result.out);
  ASSERT_TRUE(printed) << printed.error().to_string();
  EXPECT_EQ(printed->listen.max_recipients, 7u);
  EXPECT_EQ(printed->log.format, LogFormat::json);
  EXPECT_EQ(result.out, to_toml(*load_config(file)));
}

TEST_F(Cli, ConfigOptionWorksBeforeAndAfterTheCommand) {
  const auto file = write_config("[listen]\nmax_recipients = 7\n");
  const auto after = cli({"check-config", "--config", file});
  const auto before = cli({"--config", file, "check-config"});
  const auto short_form = cli({"check-config", "-c", file});
  EXPECT_EQ(after.status, 0);
  EXPECT_EQ(before.status, 0);
  EXPECT_EQ(before.out, after.out);
  EXPECT_EQ(short_form.out, after.out);
  EXPECT_NE(after.out.find("max_recipients = 7"), std::string::npos);
}

TEST_F(Cli, BadConfigExitsTwoNamingTheKey) {
  const auto file = write_config("[listen]\nmax_recipent = 5\n");
  for (const auto& args : std::vector<std::vector<std::string>>{{"check-config", "--config", file},
                                                                {"--config", file, "check-config"},
                                                                {"queue", "list", "--config", file},
                                                                {"run", "--config", file}}) {
    const auto result = cli(args);
    EXPECT_EQ(result.status, 2);
    EXPECT_EQ(result.out, "");
    EXPECT_TRUE(result.err.starts_with("stsrelay: config: listen.max_recipent: unknown key"))
        << result.err;
  }
}

TEST_F(Cli, TomlSyntaxErrorExitsTwoWithLineAndColumn) {
  const auto file = write_config("[listen]\nmax_recipients = \n");
  const auto result = cli({"check-config", "--config", file});
  EXPECT_EQ(result.status, 2);
  EXPECT_NE(result.err.find(file + ": line 2, column"), std::string::npos) << result.err;
}

TEST_F(Cli, FlushWithoutARunningDaemonExitsOneAndSaysSo) {
  const auto file = queue_config();
  const auto flush = cli({"queue", "flush", "--config", file});
  EXPECT_EQ(flush.status, 1);
  EXPECT_NE(flush.err.find("no stsrelay daemon answers"), std::string::npos) << flush.err;
}

TEST_F(Cli, QueueCommandsOnAMissingQueueNeitherFailNorCreateIt) {
  const auto file = queue_config();
  const auto list = cli({"queue", "list", "--config", file});
  EXPECT_EQ(list.status, 0) << list.err;
  EXPECT_EQ(list.out, "");
  const auto json = cli({"queue", "list", "--json", "--config", file});
  EXPECT_EQ(json.status, 0) << json.err;
  EXPECT_EQ(json.out, "[]\n");
  const auto del = cli({"queue", "delete", "0123456789AB", "--config", file});
  EXPECT_EQ(del.status, 1);
  EXPECT_EQ(del.err, "stsrelay: no message with id 0123456789AB\n");
  EXPECT_FALSE(std::filesystem::exists(dir_.path() / "spool"));
}

}  // namespace
}  // namespace stsrelay::relay
