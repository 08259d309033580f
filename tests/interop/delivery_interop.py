"""Interop: mail submitted with swaks to a running `stsrelay run` reaches real
MX hosts under each MTA-STS policy mode, or is held back where the policy
says so. The peers are real programs from Debian's packages on loopback:
unbound serves the zone (MX, A and _mta-sts TXT records), nginx serves the
policies over HTTPS, and aiosmtpd (python3-aiosmtpd, with the handler in
recording_handler.py) plays the MX hosts, with STARTTLS certificates from a
test CA made with the openssl command (and one from another CA).

Each scenario has its own recipient domain and envelope sender, so that
scenarios sharing a relay and MX hosts cannot be confused. Every wait is on
an event (a log line, a file the MX wrote, the queue listing) with a
timeout; nothing asserts on timings.

Run: /usr/bin/python3 -B delivery_interop.py --stsrelay PATH [unittest args]
"""

import base64
import email
import email.policy
import json
import os
import re
import shutil
import smtplib
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "integration", "system"))

import relay_harness  # noqa: E402
from peers import (WAIT_TIMEOUT, Peers, TestCa, free_port_on_all, policy_site, require_programs,  # noqa: E402
                   relay_overrides, subject_of, wait_until)
from relay_harness import Relay, bare_address  # noqa: E402

SWAKS_TIMEOUT = 60

DNS_ADDRESS = "127.0.0.1"
POLICY_ADDRESS = "127.0.0.20"  # nginx: every mta-sts.* host


class Mx:
    """One MX host: its name, address and what its STARTTLS offers."""

    def __init__(self, key, address, tls, cert_names=None, delay_before=0.0, delay_after=0.0, delay_quit=0.0,
                 script=()):
        self.key = key
        self.name = key + ".mx.test"
        self.address = address
        self.tls = tls  # "test-ca", "other-ca" or None (no STARTTLS)
        self.cert_names = cert_names or [self.name]
        self.delay_before = delay_before
        self.delay_after = delay_after
        self.delay_quit = delay_quit
        self.script = list(script)  # more recording_handler options


GOOD = Mx("good", "127.0.0.21", "test-ca",
          script=["--reply", "refused=550 5.1.1 no such user", "--reply-once", "later=451 4.3.0 try again later"])
UNTRUSTED = Mx("untrusted", "127.0.0.22", "other-ca")
MISMATCH = Mx("mismatch", "127.0.0.23", "test-ca", cert_names=["someone-else.mx.test"])
PLAIN = Mx("plain", "127.0.0.24", None)
# Slow to take DATA, then answers 250 as soon as it has recorded the message:
# a relay killed while waiting on it leaves nothing with the MX, so the
# duplicates are the relay's own window between the 250 and its commit. It is
# slow to answer QUIT as well, which must not widen that window.
SLOW_DATA = Mx("slow-data", "127.0.0.25", "test-ca", delay_before=0.2, delay_quit=0.3)
# Records the message, then is slow to answer 250 (RFC 1047): a relay killed
# then has left the message with the MX without seeing its 250.
SLOW_REPLY = Mx("slow-reply", "127.0.0.26", "test-ca", delay_before=0.1, delay_after=0.1)
MX_HOSTS = [GOOD, UNTRUSTED, MISMATCH, PLAIN, SLOW_DATA, SLOW_REPLY]


class Domain:
    """A recipient domain: its MX hosts (preference order) and MTA-STS policy."""

    def __init__(self, name, mx, mode=None, policy_mx=None, sender=None):
        self.name = name
        self.mx = mx
        self.mode = mode  # None: no _mta-sts record at all
        self.policy_mx = policy_mx if policy_mx is not None else [host.name for host in mx]
        self.sender = sender or name.split(".")[0] + "@client.test"
        self.recipient = "rcpt@" + name

    def policy_text(self):
        return ("version: STSv1\nmode: %s\n" % self.mode + "".join("mx: %s\n" % mx for mx in self.policy_mx)
                + "max_age: 86400\n")


ENFORCE_VALID = Domain("enforce-valid.test", [GOOD], "enforce")
ENFORCE_UNTRUSTED = Domain("enforce-untrusted.test", [UNTRUSTED], "enforce")
ENFORCE_MISMATCH = Domain("enforce-mismatch.test", [MISMATCH], "enforce")
ENFORCE_PLAIN = Domain("enforce-plain.test", [PLAIN], "enforce")
# The preferred MX is not in the policy; the backup is.
ENFORCE_BACKUP = Domain("enforce-backup.test", [PLAIN, GOOD], "enforce", policy_mx=[GOOD.name])
TESTING_BAD_CERT = Domain("testing-badcert.test", [UNTRUSTED], "testing")
NONE_PLAIN = Domain("none-plain.test", [PLAIN])
NONE_BAD_CERT = Domain("none-badcert.test", [UNTRUSTED])
# The GOOD MX refuses refused@ (550) and defers later@ once (451).
PARTIAL = Domain("partial.test", [GOOD], "enforce", sender="partial@dsn.test")
SENDERS = Domain("dsn.test", [GOOD])  # where PARTIAL's bounce goes
RETRY = Domain("retry.test", [GOOD], "enforce")
CRASH_SLOW_DATA = Domain("crash-slow-data.test", [SLOW_DATA], "enforce", policy_mx=["*.mx.test"])
CRASH_SLOW_REPLY = Domain("crash-slow-reply.test", [SLOW_REPLY], "enforce", policy_mx=["*.mx.test"])
# No policy, delivered just before the enforce domain of the same MX host: the
# opportunistic connection this leaves idle must not serve the enforce domain.
WARM = {host.key: Domain("warm-%s.test" % host.key, [host]) for host in (UNTRUSTED, MISMATCH, PLAIN)}
DOMAINS = [ENFORCE_VALID, ENFORCE_UNTRUSTED, ENFORCE_MISMATCH, ENFORCE_PLAIN, ENFORCE_BACKUP, TESTING_BAD_CERT,
           NONE_PLAIN, NONE_BAD_CERT, PARTIAL, SENDERS, RETRY, CRASH_SLOW_DATA, CRASH_SLOW_REPLY, *WARM.values()]

TLS_1_2_OR_NEWER = ("TLSv1.2", "TLSv1.3")


def zone_records():
    records = []
    for domain in DOMAINS:
        for preference, host in enumerate(domain.mx, start=1):
            records.append("%s. 300 IN MX %d %s." % (domain.name, preference * 10, host.name))
        if domain.mode is not None:
            records.append("mta-sts.%s. 300 IN A %s" % (domain.name, POLICY_ADDRESS))
            records.append('_mta-sts.%s. 300 IN TXT "v=STSv1; id=20240101"' % domain.name)
    for host in MX_HOSTS:
        records.append("%s. 300 IN A %s" % (host.name, host.address))
    return records




class DeliveryInterop(unittest.TestCase):
    directory = None
    peers = None
    relay = None

    @classmethod
    def setUpClass(cls):
        require_programs("unbound", "nginx", "openssl", "swaks")
        cls.directory = tempfile.mkdtemp(prefix="stsrelay-delivery-")
        os.chmod(cls.directory, 0o755)  # nginx workers read the policies
        cls.peers = Peers(cls.directory)
        try:
            cls.start_peers()
            cls.relay = cls.new_relay()
            cls.relay.start()
        except BaseException:
            cls.cleanup()
            raise

    @classmethod
    def start_peers(cls):
        directory = cls.directory
        ca = TestCa(os.path.join(directory, "ca"))
        other_ca = TestCa(os.path.join(directory, "other-ca"), name="some other CA")
        cls.ca_file = ca.cert

        cls.dns_port = cls.peers.start_unbound(DNS_ADDRESS, zone_records())

        with_policy = [domain for domain in DOMAINS if domain.mode is not None]
        policy_cert, policy_key = ca.issue("mta-sts", ["mta-sts." + domain.name for domain in with_policy])
        sites = [policy_site(directory, domain.name, domain.policy_text()) for domain in with_policy]
        cls.policy_port = cls.peers.start_nginx(POLICY_ADDRESS, policy_cert, policy_key, sites)

        cls.mx_port = free_port_on_all([host.address for host in MX_HOSTS])
        for host in MX_HOSTS:
            cert = key = None
            if host.tls is not None:
                cert, key = (ca if host.tls == "test-ca" else other_ca).issue(host.key, host.cert_names)
            args = [cls.mx_directory(host), "--name", host.name,
                    "--delay-before", str(host.delay_before), "--delay-after", str(host.delay_after),
                    "--delay-quit", str(host.delay_quit), *host.script]
            cls.peers.start_aiosmtpd(host.key, host.address, cls.mx_port, cert, key,
                                     handler="recording_handler.Recorder", handler_args=args, pythonpath=HERE)

    @classmethod
    def mx_directory(cls, host):
        return os.path.join(cls.directory, "mx", host.key)

    @classmethod
    def new_relay(cls, **delivery):
        relay = Relay()
        relay.overrides = relay_overrides(cls.mx_port, cls.ca_file, "%s:%d" % (DNS_ADDRESS, cls.dns_port),
                                          cls.policy_port, delivery=delivery)
        return relay

    @classmethod
    def cleanup(cls):
        try:
            if cls.relay is not None:
                cls.relay.close()
        finally:
            try:
                if cls.peers is not None:
                    cls.peers.stop()
            finally:
                if cls.directory is not None:
                    shutil.rmtree(cls.directory, ignore_errors=True)

    @classmethod
    def tearDownClass(cls):
        try:
            cls.relay.stop_and_check()
        finally:
            cls.cleanup()

    # -- what the MX hosts saw ---------------------------------------------

    def received(self, host, domain=None):
        """The messages HOST recorded (to DOMAIN's recipients, if given)."""
        directory = self.mx_directory(host)
        messages = []
        for name in sorted(os.listdir(directory)):
            if not name.endswith(".json"):
                continue
            with open(os.path.join(directory, name)) as record:
                message = json.load(record)
            message["data"] = base64.b64decode(message["data"])
            if domain is None or any(rcpt.endswith("@" + domain.name) for rcpt in message["rcpt_tos"]):
                messages.append(message)
        return messages

    def mail_commands(self, host, sender):
        """Every MAIL FROM:<SENDER> HOST was given, delivered or not."""
        path = os.path.join(self.mx_directory(host), "mail.jsonl")
        if not os.path.exists(path):
            return []
        with open(path) as log:
            entries = [json.loads(line) for line in log if line.strip()]
        return [entry for entry in entries if entry["mail_from"] == sender]

    def received_anywhere(self, domain):
        return [message for host in MX_HOSTS for message in self.received(host, domain)]

    # -- the relay ---------------------------------------------------------

    def swaks(self, domain, subject, recipients=None, relay=None):
        """Submits one message for DOMAIN with swaks; returns its queue id."""
        relay = relay or self.relay
        command = ["swaks", "--server", relay.host, "--port", str(relay.port), "--helo", "client.test",
                   "--from", domain.sender, "--to", ",".join(recipients or [domain.recipient]),
                   "--header", "Subject: " + subject,
                   "--body", "body of " + subject]
        result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, timeout=SWAKS_TIMEOUT)
        transcript = result.stdout.decode("utf-8", "replace") + result.stderr.decode("utf-8", "replace")
        self.assertEqual(result.returncode, 0, "swaks failed:\n%s\n%s" % (transcript, relay.log_text()))
        ids = re.findall(r"<[-~]\s+250 2\.0\.0 Ok: queued as (" + relay_harness.QUEUE_ID_PATTERN + ")", transcript)
        self.assertEqual(len(ids), 1, "no 'queued as' in the swaks transcript:\n" + transcript)
        return ids[0]

    def outcome(self, status, queue_id, min_attempts=1, relay=None):
        """The relay's log line STATUS (sent/deferred/bounced) for QUEUE_ID."""
        relay = relay or self.relay
        return relay.wait_for_event(status, timeout=WAIT_TIMEOUT,
                                    predicate=lambda e: e.get("queue_id") == queue_id
                                    and e.get("attempts", 0) >= min_attempts)

    def events_for(self, name, queue_id):
        return [event for event in self.relay.events_named(name) if event.get("queue_id") == queue_id]

    def assertDelivered(self, domain, queue_id, subject, host, tls):
        """One copy reached HOST (and no other MX), TLS as given; the queue forgot it."""
        sent = self.outcome("sent", queue_id)
        self.assertEqual(sent["recipients"], ["<%s>" % domain.recipient], sent)
        self.assertEqual(sent["mx"], host.name, sent)
        self.assertEqual(sent["ip"], host.address, sent)
        self.assertEqual(sent["domain"], domain.name, sent)
        messages = self.received(host, domain)
        self.assertEqual([subject_of(m["data"]) for m in messages], [subject], messages)
        message = messages[0]
        self.assertEqual(message["mail_from"], domain.sender)
        self.assertEqual(message["rcpt_tos"], [domain.recipient])
        self.assertIs(message["tls"], tls, message)
        if tls:
            self.assertIn(message["tls_version"], TLS_1_2_OR_NEWER, message)
            self.assertEqual(sent["tls_version"], message["tls_version"], sent)
        self.assertTrue(message["data"].startswith(b"Received: from "), message["data"][:200])
        self.assertIn(b"body of " + subject.encode(), message["data"])
        self.assertEqual(len(self.received_anywhere(domain)), 1, "delivered more than once")
        self.assertIsNone(self.relay.queue_entry(queue_id), "a sent message stays in the queue")
        return sent, message

    def warm_up(self, host):
        """Delivers a message to HOST without a policy and waits for its `sent`;
        returns at once, while the connection may still be idle in the relay."""
        warm = WARM[host.key]
        sent = self.outcome("sent", self.swaks(warm, "warm " + host.key))
        self.assertEqual(sent["mx"], host.name, sent)
        self.assertEqual(len(self.received(host, warm)), 1)

    def assertHeldBack(self, domain, queue_id, host, reason):
        """Deferred on two attempts in a row, REASON named in the log and the
        queue; HOST never saw so much as a MAIL command for it."""
        first = self.outcome("deferred", queue_id)
        # The retry (queue.retry_min = 1s) is refused the same way.
        deferred = self.outcome("deferred", queue_id, min_attempts=first["attempts"] + 1)
        for event in (first, deferred):
            self.assertEqual(event["policy_mode"], "enforce", event)
            self.assertEqual(event["verification"], reason, event)
            self.assertEqual(event["mx"], host.name, event)
            self.assertIn(reason, event["reply"], event)
        self.assertEqual(self.events_for("sent", queue_id), [])
        self.assertEqual(self.events_for("bounced", queue_id), [], "an enforce failure is deferred, not bounced")
        entry = self.relay.queue_entry(queue_id)
        self.assertIsNotNone(entry, "%s left the queue" % queue_id)
        [recipient] = entry["recipients"]
        self.assertEqual(bare_address(recipient["address"]), domain.recipient)
        self.assertEqual(recipient["status"], "deferred", entry)
        self.assertGreaterEqual(recipient["attempts"], 2, entry)
        self.assertIn(reason, recipient["last_error"], entry)
        self.assertEqual(self.received_anywhere(domain), [])
        self.assertEqual(self.mail_commands(host, domain.sender), [], "MAIL was sent to a host the policy refuses")
        return deferred

    # -- 1. enforce + valid certificate ----------------------------------

    def test_enforce_valid_certificate_delivers_over_tls(self):
        queue_id = self.swaks(ENFORCE_VALID, "enforce valid")
        sent, _ = self.assertDelivered(ENFORCE_VALID, queue_id, "enforce valid", GOOD, tls=True)
        self.assertEqual(sent["policy_mode"], "enforce", sent)
        self.assertEqual(sent["policy_id"], "20240101", sent)
        self.assertEqual(sent["verification"], "valid", sent)
        self.assertIn(sent["tls_version"], TLS_1_2_OR_NEWER, sent)
        self.assertTrue(sent["tls_cipher"], sent)
        self.assertTrue(sent["reply"].startswith("250"), sent)

    def test_enforce_delivers_through_the_listed_backup_only(self):
        queue_id = self.swaks(ENFORCE_BACKUP, "enforce backup")
        sent, _ = self.assertDelivered(ENFORCE_BACKUP, queue_id, "enforce backup", GOOD, tls=True)
        self.assertEqual(sent["verification"], "valid", sent)
        skipped = [e for e in self.events_for("sts_mx_not_listed", queue_id) if e.get("mx") == PLAIN.name]
        self.assertTrue(skipped, self.relay.log_text())
        self.assertEqual(skipped[0]["action"], "skipped", skipped)
        self.assertEqual(self.mail_commands(PLAIN, ENFORCE_BACKUP.sender), [])

    # -- 2. enforce + a certificate that does not pass ---------------------

    def test_enforce_untrusted_certificate_defers(self):
        self.warm_up(UNTRUSTED)
        queue_id = self.swaks(ENFORCE_UNTRUSTED, "enforce untrusted")
        self.assertHeldBack(ENFORCE_UNTRUSTED, queue_id, UNTRUSTED, "certificate-not-trusted")

    def test_enforce_certificate_for_another_host_defers(self):
        self.warm_up(MISMATCH)
        queue_id = self.swaks(ENFORCE_MISMATCH, "enforce mismatch")
        self.assertHeldBack(ENFORCE_MISMATCH, queue_id, MISMATCH, "certificate-host-mismatch")

    # -- 3. enforce + no STARTTLS ------------------------------------------

    def test_enforce_without_starttls_defers_never_plaintext(self):
        self.warm_up(PLAIN)
        queue_id = self.swaks(ENFORCE_PLAIN, "enforce plain")
        self.assertHeldBack(ENFORCE_PLAIN, queue_id, PLAIN, "starttls-not-supported")

    # -- 4. testing + bad certificate --------------------------------------

    def test_testing_bad_certificate_delivers_with_a_warning(self):
        queue_id = self.swaks(TESTING_BAD_CERT, "testing untrusted")
        sent, _ = self.assertDelivered(TESTING_BAD_CERT, queue_id, "testing untrusted", UNTRUSTED, tls=True)
        self.assertEqual(sent["policy_mode"], "testing", sent)
        self.assertEqual(sent["verification"], "certificate-not-trusted", sent)
        warnings = self.events_for("sts_testing_failure", queue_id)
        self.assertEqual(len(warnings), 1, self.relay.log_text())
        self.assertEqual(warnings[0]["level"], "warn", warnings)
        self.assertEqual(warnings[0]["domain"], TESTING_BAD_CERT.name, warnings)
        self.assertEqual(warnings[0]["mx"], UNTRUSTED.name, warnings)
        self.assertEqual(warnings[0]["result_type"], "certificate-not-trusted", warnings)

    # -- 5. no policy: opportunistic TLS -----------------------------------

    def test_no_policy_without_starttls_delivers_in_plaintext(self):
        queue_id = self.swaks(NONE_PLAIN, "none plain")
        sent, message = self.assertDelivered(NONE_PLAIN, queue_id, "none plain", PLAIN, tls=False)
        self.assertEqual(sent["policy_mode"], "none", sent)
        self.assertEqual(sent["tls_version"], "", sent)
        self.assertIsNone(message["tls_version"])

    def test_no_policy_untrusted_certificate_delivers_over_tls(self):
        queue_id = self.swaks(NONE_BAD_CERT, "none untrusted")
        sent, _ = self.assertDelivered(NONE_BAD_CERT, queue_id, "none untrusted", UNTRUSTED, tls=True)
        self.assertEqual(sent["policy_mode"], "none", sent)
        # Not required to validate, but logged as it is.
        self.assertEqual(sent["verification"], "certificate-not-trusted", sent)
        self.assertEqual(self.events_for("sts_testing_failure", queue_id), [])

    # -- replies: 5xx for one recipient of two, 4xx then success -----------

    def test_one_recipient_refused_bounces_with_a_dsn_the_other_is_delivered(self):
        refused = "refused@" + PARTIAL.name
        queue_id = self.swaks(PARTIAL, "partial", recipients=[PARTIAL.recipient, refused])
        sent = self.outcome("sent", queue_id)
        self.assertEqual(sent["recipients"], ["<%s>" % PARTIAL.recipient], sent)
        self.assertEqual(sent["verification"], "valid", sent)
        bounced = self.outcome("bounced", queue_id)
        self.assertEqual(bounced["recipients"], ["<%s>" % refused], bounced)
        self.assertIn("550 5.1.1", bounced["reply"], bounced)
        [message] = self.received(GOOD, PARTIAL)
        self.assertEqual(message["rcpt_tos"], [PARTIAL.recipient])
        self.assertEqual(subject_of(message["data"]), "partial")

        # The bounce is queued and delivered like any message, to the sender's MX.
        notice = self.relay.wait_for_event("bounce_queued", predicate=lambda e: e.get("original_id") == queue_id)
        self.assertEqual(bare_address(notice["recipient"]), PARTIAL.sender, notice)
        self.outcome("sent", notice["queue_id"])
        [dsn] = self.received(GOOD, SENDERS)
        self.assertEqual(dsn["mail_from"], "<>")  # aiosmtpd keeps the null path as given
        self.assertEqual(dsn["rcpt_tos"], [PARTIAL.sender])
        report = email.message_from_bytes(dsn["data"], policy=email.policy.compat32)
        self.assertEqual(report.get_content_type(), "multipart/report")
        self.assertEqual(report.get_param("report-type"), "delivery-status")
        text = dsn["data"].decode("utf-8", "replace")
        self.assertRegex(text, r"Final-Recipient: rfc822; ?" + re.escape(refused))
        self.assertIn("Action: failed", text)
        self.assertIn("Status: 5.1.1", text)
        self.assertIn("Subject: partial", text)  # the original headers
        self.assertNotIn(PARTIAL.recipient, re.findall(r"Final-Recipient: .*", text)[0])
        self.assertIsNone(self.relay.queue_entry(queue_id))

    def test_deferred_by_the_mx_then_delivered_once(self):
        recipient = "later@" + RETRY.name
        queue_id = self.swaks(RETRY, "retry", recipients=[recipient])
        deferred = self.outcome("deferred", queue_id)
        self.assertIn("451 4.3.0", deferred["reply"], deferred)
        sent = self.outcome("sent", queue_id, min_attempts=2)
        self.assertEqual(sent["recipients"], ["<%s>" % recipient], sent)
        messages = self.received(GOOD, RETRY)
        self.assertEqual([m["rcpt_tos"] for m in messages], [[recipient]])
        self.assertIsNone(self.relay.queue_entry(queue_id))

    # -- 6. SIGKILL during delivery ----------------------------------------

    MESSAGES = 30
    MAX_CONNECTIONS = 3

    def test_sigkill_while_the_mx_reads_data(self):
        self.crash_during_delivery(SLOW_DATA, CRASH_SLOW_DATA)

    def test_sigkill_while_the_mx_holds_back_its_250(self):
        self.crash_during_delivery(SLOW_REPLY, CRASH_SLOW_REPLY)

    @staticmethod
    def copies_by_queue_id(messages):
        """{queue id (from the relay's Received header): [the MX's copies]}."""
        copies = {}
        for message in messages:
            match = re.search(rb"\bid (" + relay_harness.QUEUE_ID_PATTERN.encode() + rb")", message["data"])
            copies.setdefault(match.group(1).decode() if match else "?", []).append(message)
        return copies

    @staticmethod
    def duplicates_explained(copies, killed_at, relay):
        """Each duplicated message: its queue id, when and over which session
        the MX took each copy, and the relay's `sent` lines for it."""
        lines = []
        for queue_id, copies_of_one in sorted(copies.items()):
            if len(copies_of_one) < 2:
                continue
            lines.append("%s (%s):" % (queue_id, subject_of(copies_of_one[0]["data"])))
            for copy in copies_of_one:
                lines.append("  received %+.3fs from the kill over %s" % (copy["received_at"] - killed_at,
                                                                        copy["peer"]))
            for event in relay.all_events:
                if event.get("queue_id") == queue_id and event.get("event") in ("sent", "deferred"):
                    lines.append("  logged %s at %s" % (event["event"], event.get("time")))
        return "\n".join(lines)

    def crash_during_delivery(self, host, domain):
        """SIGKILL while deliveries to HOST are in flight, then a restart on the
        same queue: every message reaches the MX at least once; duplicates only
        for transactions in flight at the kill, at most delivery.max_connections."""
        relay = self.new_relay(max_connections=self.MAX_CONNECTIONS,
                               max_connections_per_domain=self.MAX_CONNECTIONS)
        resolver = relay.overrides.pop("dns")
        try:
            # Queued first, with the harness's resolver that never answers, so
            # that the kill below does not depend on how fast the disk takes
            # the submissions.
            relay.start()
            subjects = ["%s %02d" % (domain.name, n) for n in range(self.MESSAGES)]
            client = smtplib.SMTP(relay.host, relay.port, timeout=30, local_hostname="client.test")
            try:
                for n, subject in enumerate(subjects):
                    message = ("From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\nMessage-ID: <%02d@%s>\r\n"
                               "\r\nbody %d\r\n" % (domain.sender, domain.recipient, subject, n, domain.name, n))
                    refused = client.sendmail(domain.sender, [domain.recipient], message.encode())
                    self.assertEqual(refused, {})
                client.quit()
            finally:
                client.close()

            self.assertEqual(len(relay.queue_list()), self.MESSAGES)
            self.assertEqual(relay.stop(), 0)
            self.assertEqual(relay.events_named("sent"), [])
            relay.overrides["dns"] = resolver
            relay.start()

            # Some, not all, have reached the MX: deliveries are under way.
            wait_until(lambda: len(self.received(host, domain)) >= self.MAX_CONNECTIONS + 1,
                       "%s receiving its first messages" % host.name, details=relay.log_text)
            relay.kill()
            killed_at = time.time()
            at_kill = len(self.received(host, domain))
            sent_before = {event["queue_id"] for event in relay.events_named("sent")}
            self.assertLess(at_kill, self.MESSAGES, "everything was delivered before the kill: nothing was tested")

            relay.start()
            wait_until(lambda: relay.queue_list() == [], "the queue emptying after the restart",
                       details=lambda: json.dumps(relay.queue_list(), indent=1) + relay.log_text())
            messages = self.received(host, domain)
            received = [subject_of(m["data"]) for m in messages]
            self.assertEqual(sorted(set(subjects) - set(received)), [], "lost over the crash")
            self.assertEqual(set(received), set(subjects))
            duplicates = len(received) - self.MESSAGES
            sys.stderr.write("\n  %s: the MX had %d of %d at the kill, %d of them logged sent; %d duplicates;"
                             " %d SMTP sessions for %d messages\n"
                             % (host.name, at_kill, self.MESSAGES, len(sent_before), duplicates,
                                len({tuple(m["peer"]) for m in messages}), len(messages)))
            copies = self.copies_by_queue_id(messages)
            explanation = self.duplicates_explained(copies, killed_at, relay)
            self.assertLessEqual(duplicates, self.MAX_CONNECTIONS,
                                 "more duplicates than transactions that can be in flight\n" + explanation)
            # The killed relay logged `sent` only after committing it: what it
            # logged must not go out again.
            again = sorted(queue_id for queue_id, copies_of_one in copies.items()
                           if len(copies_of_one) > 1 and queue_id in sent_before)
            self.assertEqual(again, [], "logged as sent before the kill, delivered again\n" + explanation)
            for message in messages:
                self.assertTrue(message["tls"], message)
            self.assertEqual([e for e in relay.all_events if e.get("event") in ("bounced", "bounce_queued")], [])
            self.assertEqual(relay.stop(), 0)
            # The killed process may have left a cut line behind; errors and
            # sanitizer reports are what matter.
            bad = [line for line in relay.problems()
                   if "Sanitizer" in line or "runtime error:" in line or '"level":"err' in line]
            self.assertEqual(bad, [])
        finally:
            relay.close()

if __name__ == "__main__":
    relay_harness.main()
