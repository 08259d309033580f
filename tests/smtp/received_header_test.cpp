#include "smtp/received_header.hpp"

#include <chrono>

#include <gtest/gtest.h>

namespace stsrelay::smtp {
namespace {

using namespace std::chrono;

system_clock::time_point fixed_time() {
  return sys_days{year{2026} / December / 4} + hours{17} + minutes{40} + seconds{33};
}

ReceivedTrace base_trace() {
  ReceivedTrace trace;
  trace.helo = "client.test";
  trace.client_address = "192.0.2.1";
  trace.hostname = "relay.test";
  trace.message_id = "0001ABCD";
  trace.protocol = "ESMTP";
  trace.time = fixed_time();
  return trace;
}

TEST(Received, OneRecipient) {
  ReceivedTrace trace = base_trace();
  trace.single_recipient = "r@d.test";
  EXPECT_EQ(received_header(trace),
            "Received: from client.test ([192.0.2.1])\r\n"
            "\tby relay.test (stsrelay) with ESMTP id 0001ABCD\r\n"
            "\tfor <r@d.test>;\r\n"
            "\tFri, 04 Dec 2026 17:40:33 +0000\r\n");
}

TEST(Received, SeveralRecipientsAndTlsOverIpv6) {
  ReceivedTrace trace = base_trace();
  trace.client_address = "2001:db8::1";
  trace.protocol = "ESMTPS";
  trace.tls = true;
  trace.tls_version = "TLSv1.3";
  trace.tls_cipher = "TLS_AES_256_GCM_SHA384";
  EXPECT_EQ(received_header(trace),
            "Received: from client.test ([IPv6:2001:db8::1])\r\n"
            "\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384)\r\n"
            "\tby relay.test (stsrelay) with ESMTPS id 0001ABCD;\r\n"
            "\tFri, 04 Dec 2026 17:40:33 +0000\r\n");
}

TEST(Received, HeloIsSanitised) {
  ReceivedTrace trace = base_trace();
  trace.helo = "evil)\r\nX-Injected: (yes\x01\xc3\xa9;";
  const std::string header = received_header(trace);
  EXPECT_EQ(header.substr(0, header.find("\r\n")),
            "Received: from evil???X-Injected:??yes???? ([192.0.2.1])");
}

TEST(Received, Protocols) {
  EXPECT_EQ(received_protocol(false, false, false), "SMTP");
  EXPECT_EQ(received_protocol(true, false, false), "ESMTP");
  EXPECT_EQ(received_protocol(true, true, false), "ESMTPS");
  EXPECT_EQ(received_protocol(true, false, true), "UTF8SMTP");
  EXPECT_EQ(received_protocol(true, true, true), "UTF8SMTPS");
}

TEST(Received, Dates) {
  EXPECT_EQ(rfc5322_date(fixed_time()), "Fri, 04 Dec 2026 17:40:33 +0000");
  EXPECT_EQ(rfc5322_date(system_clock::time_point{}), "Thu, 01 Jan 1970 00:00:00 +0000");
  EXPECT_EQ(rfc5322_date(sys_days{year{2024} / February / 29} + hours{23} + minutes{59} +
                         seconds{59} + milliseconds{999}),
            "Thu, 29 Feb 2024 23:59:59 +0000");
}

TEST(Received, AddressLiterals) {
  EXPECT_EQ(address_literal("192.0.2.1"), "[192.0.2.1]");
  EXPECT_EQ(address_literal("::1"), "[IPv6:::1]");
  EXPECT_EQ(address_literal("::ffff:192.0.2.1"), "[192.0.2.1]");
  EXPECT_EQ(address_literal("::FFFF:192.0.2.1"), "[192.0.2.1]");
}

}  // namespace
}  // namespace stsrelay::smtp
