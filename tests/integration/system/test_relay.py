"""End-to-end tests of the stsrelay binary through its external contract
(SPEC.md): SMTP on loopback, the queue CLI, the queue database, signals.

Run: python3 test_relay.py --stsrelay PATH [unittest args]
"""

import os
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
import tomllib
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import relay_harness  # noqa: E402
from relay_harness import QUEUE_ID_PATTERN, Relay, bare_address, queue_id_from_reply, smtp_raw  # noqa: E402

SMTP_TIMEOUT = 30.0
EXTENSIONS = ("pipelining", "size", "8bitmime", "smtputf8", "enhancedstatuscodes")


def smtp_client(relay, source=None):
    client = smtplib.SMTP(timeout=SMTP_TIMEOUT, local_hostname="client.test",
                          source_address=(source, 0) if source else None)
    client.connect(relay.host, relay.port)
    return client


def submit(client, sender, recipients, content, mail_options=()):
    """One transaction on an open smtplib session; returns the queue id.

    smtplib dot-stuffs CONTENT and ends DATA with <CRLF>.<CRLF> itself.
    """
    code, reply = client.mail(sender, list(mail_options))
    if code != 250:
        raise AssertionError("MAIL FROM:<%s> got %d %r" % (sender, code, reply))
    for recipient in recipients:
        code, reply = client.rcpt(recipient)
        if code != 250:
            raise AssertionError("RCPT TO:<%s> got %d %r" % (recipient, code, reply))
    code, reply = client.data(content)
    if code != 250:
        raise AssertionError("end of DATA got %d %r" % (code, reply))
    if not reply.startswith(b"2.0.0 Ok: queued as "):
        raise AssertionError("end of DATA reply is not '250 2.0.0 Ok: queued as <ID>': %r" % reply)
    queue_id = queue_id_from_reply(reply)
    if queue_id is None or reply != b"2.0.0 Ok: queued as " + queue_id.encode():
        raise AssertionError("no 12-character Crockford base32 id in %r" % reply)
    return queue_id


def simple_message(token, extra=b""):
    return (
        b"From: <sender@example.test>\r\n"
        b"To: <rcpt@example.test>\r\n"
        b"Subject: " + token.encode() + b"\r\n"
        b"\r\n"
        b"token " + token.encode() + b"\r\n"
        + extra
        + b"end of " + token.encode() + b"\r\n"
    )


def received_prefix(content, original):
    """Asserts CONTENT is a Received header followed by ORIGINAL; returns the header."""
    if not content.startswith(b"Received: from "):
        raise AssertionError("stored content does not start with 'Received: from ': %r" % content[:200])
    if not content.endswith(original):
        raise AssertionError("stored content does not end with the original message byte-exact:\n%r\n--- expected tail ---\n%r"
                             % (content[-len(original) - 200:], original))
    header = content[: len(content) - len(original)]
    if not header.endswith(b"\r\n"):
        raise AssertionError("Received header does not end with CRLF: %r" % header)
    for line in header[:-2].split(b"\r\n"):
        if not (line.startswith(b"Received: ") or line[:1] in (b" ", b"\t")):
            raise AssertionError("stored content has more than a Received header before the message: %r" % header)
    return header


class RelayTestCase(unittest.TestCase):
    def relay(self, overrides=None, directory=None):
        relay = Relay(overrides, directory=directory)
        self.addCleanup(relay.close)
        self.addCleanup(self._print_log_on_failure, relay)
        self.addCleanup(self._check_log, relay)
        return relay

    def _check_log(self, relay):
        # Stopping gracefully lets a sanitizer build report leaks at exit.
        if relay.process is not None and relay.process.poll() is None:
            status = relay.stop()
            if status != 0:
                raise AssertionError("SIGTERM: exit status %d\n%s" % (status, relay.log_text()))
        problems = relay.problems()
        if problems:
            raise AssertionError("the relay logged problems:\n" + "\n".join(problems[:50]))

    def _print_log_on_failure(self, relay):
        # A red test shows what the relay said.
        outcome = getattr(self, "_outcome", None)
        if outcome is not None and not getattr(outcome, "success", True):
            sys.stderr.write("\n" + relay.log_text() + "\n")

    def assertQueueConsistent(self, relay):
        """Every listed message is whole: recipients present, size == stored content, no duplicates."""
        listing = relay.queue_list()
        contents = relay.stored_contents()
        ids = [entry["id"] for entry in listing]
        self.assertEqual(len(ids), len(set(ids)), "duplicate ids in queue list: %r" % ids)
        self.assertEqual(set(ids), set(contents), "queue list and the messages table disagree")
        for entry in listing:
            self.assertRegex(entry["id"], "^" + QUEUE_ID_PATTERN + "$")
            self.assertTrue(entry["recipients"], "message %s has no recipients" % entry["id"])
            self.assertEqual(entry["size"], len(contents[entry["id"]]),
                             "message %s: listed size differs from its stored content" % entry["id"])
            self.assertTrue(contents[entry["id"]].startswith(b"Received: from "))
        return listing, contents


class SubmissionTest(RelayTestCase):
    def test_message_is_stored_byte_exact_with_a_received_header(self):
        relay = self.relay()
        relay.start()
        original = (
            b"From: Alice <alice@example.test>\r\n"
            b"To: bob@example.test, carol@example.org\r\n"
            b"Subject: unstuffing and 8-bit\r\n"
            b"MIME-Version: 1.0\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: 8bit\r\n"
            b"\r\n"
            b".a line that starts with a dot\r\n"
            b"..two dots\r\n"
            b".\r\n"
            b"...\r\n"
            b"caf\xc3\xa9 \xe2\x82\xac and raw octets \x80\xfe\xff\r\n"
            b" . a dot not at the start .\r\n"
            b"\r\n"
            b"last line\r\n"
        )
        recipients = ["bob@example.test", "carol@example.org", "dave@example.net"]
        client = smtp_client(relay)
        try:
            code, _ = client.ehlo("client.test")
            self.assertEqual(code, 250)
            for extension in EXTENSIONS:
                self.assertTrue(client.has_extn(extension), "EHLO lacks %s: %r" % (extension, client.ehlo_resp))
            self.assertFalse(client.has_extn("starttls"), "STARTTLS offered without listen.tls_cert")
            queue_id = submit(client, "alice@example.test", recipients, original, ["BODY=8BITMIME"])
            client.quit()
        finally:
            client.close()

        queued = relay.wait_for_event("queued", predicate=lambda event: event.get("queue_id") == queue_id)
        self.assertEqual(queued.get("client"), "127.0.0.1")
        self.assertEqual(queued.get("sender"), "<alice@example.test>")
        self.assertEqual(queued.get("recipients"), ["<%s>" % r for r in recipients])

        content = relay.stored_content(queue_id)
        self.assertIsNotNone(content, "message %s acknowledged but not in the queue database" % queue_id)
        header = received_prefix(content, original)
        self.assertIn(b"client.test", header)
        self.assertIn(b"[127.0.0.1]", header)
        self.assertIn(b"by relay.test", header)
        self.assertIn(b"with ESMTP", header)
        self.assertNotIn(b"ESMTPS", header)
        self.assertEqual(queued.get("size"), len(content))

        entry = relay.queue_entry(queue_id)
        self.assertIsNotNone(entry, "queue list --json lacks %s" % queue_id)
        self.assertEqual(bare_address(entry["sender"]), "alice@example.test")
        self.assertEqual([bare_address(r["address"]) for r in entry["recipients"]], recipients)
        for recipient in entry["recipients"]:
            self.assertEqual(recipient["status"], "queued")
            self.assertEqual(recipient["attempts"], 0)
        self.assertEqual(entry["size"], len(content))
        self.assertIs(entry["held"], False)
        self.assertRegex(entry["arrival"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
        self.assertQueueConsistent(relay)

    def test_pipelined_transactions_and_null_sender_over_a_raw_socket(self):
        relay = self.relay()
        relay.start()
        first = simple_message("first")
        second = simple_message("second", b".\r\n..\r\n")
        session = smtp_raw(relay.host, relay.port, timeout=SMTP_TIMEOUT)
        try:
            self.assertEqual(session.reply()[0], 220)
            self.assertEqual(session.command(b"EHLO client.test")[0], 250)
            stuffed_second = second.replace(b"\r\n.", b"\r\n..")
            session.send(
                b"MAIL FROM:<>\r\nRCPT TO:<postmaster@example.test>\r\nDATA\r\n"
            )
            replies = [session.reply() for _ in range(3)]
            self.assertEqual([code for code, _ in replies], [250, 250, 354], replies)
            session.send(first + b".\r\nMAIL FROM:<b@example.test>\r\nRCPT TO:<c@example.test>\r\nDATA\r\n")
            replies = [session.reply() for _ in range(4)]
            self.assertEqual([code for code, _ in replies], [250, 250, 250, 354], replies)
            session.send(stuffed_second + b".\r\nQUIT\r\n")
            done, bye = session.reply(), session.reply()
            self.assertEqual(done[0], 250, done)
            self.assertEqual(bye[0], 221, bye)
        finally:
            session.close()
        first_id = queue_id_from_reply(replies[0][1][0])
        second_id = queue_id_from_reply(done[1][0])
        self.assertIsNotNone(first_id)
        self.assertIsNotNone(second_id)
        self.assertLess(first_id, second_id, "queue ids do not sort by arrival")
        received_prefix(relay.stored_content(first_id), first)
        received_prefix(relay.stored_content(second_id), second)
        entry = relay.queue_entry(first_id)
        self.assertEqual(bare_address(entry["sender"]), "")
        self.assertQueueConsistent(relay)


class CrashSafetyTest(RelayTestCase):
    CLIENTS = 4
    ACKNOWLEDGED_BEFORE_KILL = 400

    def test_sigkill_while_clients_stream_loses_nothing_acknowledged(self):
        relay = self.relay()
        relay.start()
        lock = threading.Condition()
        attempted = {}  # token -> (recipients, content): every transaction that reached DATA
        acknowledged = {}  # token -> queue id
        stop = threading.Event()
        errors = []

        def stream(worker):
            try:
                client = smtp_client(relay)
            except OSError as error:
                errors.append(error)
                return
            try:
                client.ehlo("client.test")
                number = 0
                while not stop.is_set():
                    number += 1
                    token = "%d-%d-%s" % (worker, number, uuid.uuid4().hex)
                    # Bodies of varying length, some over a typical socket buffer.
                    filler = (b"filler line for " + token.encode() + b"\r\n") * (number % 7 * 40)
                    content = simple_message(token, filler)
                    recipients = ["r%d@example.test" % i for i in range(1, 2 + number % 3)]
                    with lock:
                        attempted[token] = (recipients, content)
                    queue_id = submit(client, "s%d@example.test" % worker, recipients, content)
                    with lock:
                        acknowledged[token] = queue_id
                        lock.notify_all()
            except (smtplib.SMTPException, OSError):
                pass  # the relay was killed under us
            except AssertionError as error:
                errors.append(error)  # a refusal that is not a crash
            finally:
                client.close()
                with lock:
                    lock.notify_all()

        workers = [threading.Thread(target=stream, args=(i,), daemon=True) for i in range(self.CLIENTS)]
        for worker in workers:
            worker.start()
        try:
            with lock:
                finished = lock.wait_for(
                    lambda: len(acknowledged) >= self.ACKNOWLEDGED_BEFORE_KILL
                    or not any(w.is_alive() for w in workers),
                    timeout=60,
                )
                self.assertTrue(finished, "clients did not get %d messages through in time" % self.ACKNOWLEDGED_BEFORE_KILL)
                self.assertGreaterEqual(len(acknowledged), self.ACKNOWLEDGED_BEFORE_KILL,
                                        "the clients stopped early\n" + relay.log_text())
                streaming = sum(w.is_alive() for w in workers)
            relay.kill()
            self.assertGreater(streaming, 0, "no client was streaming when the relay was killed")
        finally:
            stop.set()
            for worker in workers:
                worker.join(timeout=60)
        self.assertFalse(errors, errors)

        with lock:
            acknowledged = dict(acknowledged)
            attempted = dict(attempted)
        relay.start()  # the same spool, a fresh process: SQLite recovers the WAL
        listing, contents = self.assertQueueConsistent(relay)
        by_id = {entry["id"]: entry for entry in listing}

        for token, queue_id in acknowledged.items():
            self.assertIn(queue_id, by_id, "message %s (%s) got a 250 but is not in the queue after the crash" % (queue_id, token))
            recipients, content = attempted[token]
            received_prefix(contents[queue_id], content)
            self.assertEqual([bare_address(r["address"]) for r in by_id[queue_id]["recipients"]], recipients)

        # Messages that never got their 250 may be there, but only whole.
        tokens_by_id = {}
        for queue_id, stored in contents.items():
            found = [token for token in attempted if (b"token " + token.encode() + b"\r\n") in stored]
            self.assertEqual(len(found), 1, "message %s matches %d submitted messages" % (queue_id, len(found)))
            recipients, content = attempted[found[0]]
            received_prefix(stored, content)
            self.assertEqual([bare_address(r["address"]) for r in by_id[queue_id]["recipients"]], recipients)
            tokens_by_id[queue_id] = found[0]
        self.assertEqual(len(set(tokens_by_id.values())), len(tokens_by_id), "a message was stored twice")

        # The restarted relay accepts mail, with an id after every earlier one.
        client = smtp_client(relay)
        try:
            client.ehlo("client.test")
            after = submit(client, "late@example.test", ["r@example.test"], simple_message("after-restart"))
            client.quit()
        finally:
            client.close()
        self.assertGreater(after, max(contents), "a queue id after restart does not sort after earlier ones")
        self.assertNotIn(after, contents)


class GracefulStopTest(RelayTestCase):
    def test_sigterm_gives_open_sessions_421_and_keeps_acknowledged_mail(self):
        relay = self.relay()
        relay.start()

        # A message acknowledged just before the stop.
        client = smtp_client(relay)
        try:
            client.ehlo("client.test")
            kept_id = submit(client, "a@example.test", ["b@example.test"], simple_message("before-stop"))
        finally:
            client.close()

        # A session in the middle of a transaction, without DATA.
        idle = smtp_raw(relay.host, relay.port, timeout=SMTP_TIMEOUT)
        # A session that ends its DATA at the moment of the stop.
        racing = smtp_raw(relay.host, relay.port, timeout=SMTP_TIMEOUT)
        # A session halfway through its DATA, silent: it must not hold up the stop.
        partial = smtp_raw(relay.host, relay.port, timeout=SMTP_TIMEOUT)
        try:
            for session in (idle, racing, partial):
                self.assertEqual(session.reply()[0], 220)
                self.assertEqual(session.command(b"EHLO client.test")[0], 250)
                self.assertEqual(session.command(b"MAIL FROM:<a@example.test>")[0], 250)
                self.assertEqual(session.command(b"RCPT TO:<b@example.test>")[0], 250)
            self.assertEqual(partial.command(b"DATA")[0], 354)
            partial.send(b"Subject: partial-stop\r\n\r\nhalf a li")
            self.assertEqual(racing.command(b"DATA")[0], 354)
            racing_content = simple_message("racing-stop")
            racing.send(racing_content + b".\r\n")
            relay.signal(signal.SIGTERM)

            relay.wait_for_event("stopping")
            try:
                idle.send(b"NOOP\r\n")
            except OSError:
                pass  # the relay may have said 421 and closed already
            code, lines = idle.reply()
            self.assertEqual(code, 421, "open session after SIGTERM got %r" % lines)
            self.assertTrue(lines[-1].startswith(b"421 4.3.2 "), lines)
            self.assertEqual(idle.reply(), (None, []), "the session stays open after 421")

            try:
                partial_code, partial_lines = partial.reply()
            except ConnectionResetError:
                partial_code, partial_lines = None, []
            self.assertIn(partial_code, (421, None), partial_lines)

            racing_code, racing_lines = racing.reply()
            self.assertIn(racing_code, (250, 421), racing_lines)
            racing_id = queue_id_from_reply(racing_lines[0]) if racing_code == 250 else None
        finally:
            idle.close()
            racing.close()
            partial.close()

        self.assertEqual(relay.wait_exit(), 0, relay.log_text())
        relay.wait_for_event("stopped")
        with self.assertRaises(OSError, msg="the relay still accepts connections after the stop"):
            socket.create_connection((relay.host, relay.port), timeout=5).close()

        listing, contents = self.assertQueueConsistent(relay)
        self.assertIn(kept_id, contents)
        received_prefix(contents[kept_id], simple_message("before-stop"))
        if racing_id is not None:
            self.assertIn(racing_id, contents, "a message acknowledged during the stop is lost")
            received_prefix(contents[racing_id], racing_content)
            self.assertEqual(len(contents), 2)
        else:
            self.assertEqual(len(contents), 1, "a message answered 421 was queued anyway")


class AccessTest(RelayTestCase):
    def test_clients_outside_allowed_networks_get_554_at_connect(self):
        relay = self.relay({"listen": {"allowed_networks": ["10.0.0.0/8", "127.0.0.1/32"]}})
        relay.start()
        refused = socket.create_connection((relay.host, relay.port), timeout=SMTP_TIMEOUT,
                                           source_address=("127.0.0.2", 0))
        session = relay_harness.RawSmtp(refused)
        try:
            code, lines = session.reply()
            self.assertEqual(code, 554, lines)
            self.assertTrue(lines[-1].startswith(b"554 5.7.1 "), lines)
            try:
                session.send(b"MAIL FROM:<a@example.test>\r\n")
                after = session.reply()
            except OSError:
                after = (None, [])
            self.assertIn(after[0], (None, 503, 554), "a refused client could go on: %r" % (after,))
        finally:
            session.close()

        relay.wait_for_event("refused", predicate=lambda event: event.get("client") == "127.0.0.2")
        client = smtp_client(relay, source="127.0.0.1")
        try:
            client.ehlo("client.test")
            submit(client, "a@example.test", ["b@example.test"], simple_message("allowed"))
            client.quit()
        finally:
            client.close()
        listing = relay.queue_list()
        self.assertEqual(len(listing), 1, listing)

    def test_only_loopback_client_refused_when_network_is_elsewhere(self):
        relay = self.relay({"listen": {"allowed_networks": ["10.0.0.0/8"]}})
        relay.start()
        session = smtp_raw(relay.host, relay.port, timeout=SMTP_TIMEOUT)
        try:
            code, lines = session.reply()
            self.assertEqual(code, 554, lines)
            self.assertTrue(lines[-1].startswith(b"554 5.7.1 "), lines)
        finally:
            session.close()
        self.assertEqual(relay.queue_list(), [])


class BadInputTest(RelayTestCase):
    """SPEC: bad input gets the proper 4xx/5xx reply, never a crash, and
    never corrupts the queue."""

    def test_bad_commands_get_their_replies_and_the_relay_keeps_working(self):
        relay = self.relay({"listen": {"max_recipients": 3}})
        relay.start()
        session = smtp_raw(relay.host, relay.port, timeout=SMTP_TIMEOUT)
        steps = [
            (b"MAIL FROM:<a@example.test>", 503),  # before EHLO
            (b"HELO", 501),
            (b"EHLO client.test", 250),
            (b"RCPT TO:<x@example.test>", 503),  # before MAIL
            (b"DATA", 503),
            (b"MAIL FROM:<a@example.test> FOO=BAR", 555),
            (b"MAIL FROM:<r\xc3\xa9@example.test>", 553),  # UTF-8 without SMTPUTF8
            (b"MAIL FROM:<a@example.test>", 250),
            (b"MAIL FROM:<a@example.test>", 503),  # nested
            (b"DATA", 503),  # no recipient yet
            (b"RCPT TO:<no at sign>", 501),
            (b"RCPT TO:x@example.test", 501),
            (b"RCPT TO:<1@example.test>", 250),
            (b"RCPT TO:<2@example.test>", 250),
            (b"RCPT TO:<3@example.test>", 250),
            (b"RCPT TO:<4@example.test>", 452),  # listen.max_recipients
            (b"X" * 600, 500),  # over 512 octets
            (b"VRFY someone", 252),
            (b"BDAT 10", 502),
            (b"RSET", 250),
            (b"NOOP", 250),
        ]
        try:
            self.assertEqual(session.reply()[0], 220)
            for command, expected in steps:
                with self.subTest(command=command[:40]):
                    code, lines = session.command(command)
                    self.assertEqual(code, expected, lines)
            self.assertEqual(session.command(b"QUIT")[0], 221)
        finally:
            session.close()
        self.assertEqual(relay.queue_list(), [])

    def test_only_crlf_dot_crlf_ends_data(self):
        # SMTP smuggling (CVE-2023-51764 class): a bare-LF "." line must not
        # end the message and let the rest pass for a second transaction.
        relay = self.relay()
        relay.start()
        session = smtp_raw(relay.host, relay.port, timeout=SMTP_TIMEOUT)
        try:
            self.assertEqual(session.reply()[0], 220)
            self.assertEqual(session.command(b"EHLO client.test")[0], 250)
            self.assertEqual(session.command(b"MAIL FROM:<a@example.test>")[0], 250)
            self.assertEqual(session.command(b"RCPT TO:<b@example.test>")[0], 250)
            self.assertEqual(session.command(b"DATA")[0], 354)
            session.send(
                b"Subject: smuggling\r\n\r\nfirst\n.\nMAIL FROM:<evil@example.test>\r\n"
                b"RCPT TO:<victim@example.test>\r\nDATA\r\nSubject: smuggled\r\n\r\n"
                b"x\r.\r\n"
                b"still the first message\r\n.\r\n"
            )
            code, lines = session.reply()
            self.assertEqual(code, 250, lines)
            self.assertEqual(session.command(b"QUIT")[0], 221)
        finally:
            session.close()
        listing, contents = self.assertQueueConsistent(relay)
        self.assertEqual(len(listing), 1, listing)
        self.assertEqual([bare_address(r["address"]) for r in listing[0]["recipients"]], ["b@example.test"])
        content = contents[listing[0]["id"]]
        self.assertIn(b"MAIL FROM:<evil@example.test>", content)
        self.assertTrue(content.endswith(b"still the first message\r\n"), content)
        body = content.split(b"\r\n\r\n", 1)[1]
        self.assertNotIn(b"\n", body.replace(b"\r\n", b""), "a bare LF was stored as-is")
        self.assertNotIn(b"\r", body.replace(b"\r\n", b""), "a bare CR was stored as-is")

    def test_idle_client_gets_421(self):
        relay = self.relay({"listen": {"idle_timeout": "1s"}})
        relay.start()
        session = smtp_raw(relay.host, relay.port, timeout=SMTP_TIMEOUT)
        try:
            self.assertEqual(session.reply()[0], 220)
            self.assertEqual(session.command(b"EHLO client.test")[0], 250)
            code, lines = session.reply()  # the relay's timer, not ours
            self.assertEqual(code, 421, lines)
            self.assertTrue(lines[-1].startswith(b"421 4.4.2 "), lines)
        finally:
            session.close()


class CommandLineTest(RelayTestCase):
    def check_config(self, relay, text):
        with open(relay.config_path, "w", encoding="utf-8") as out:
            out.write(text)
        return relay.cli("check-config")

    def test_check_config(self):
        relay = self.relay()
        relay.write_config(2525)
        result = relay.cli("check-config")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(b"relay.test", result.stdout)
        self.assertIn(b"max_recipients", result.stdout, "the effective config should list defaults too")
        effective = tomllib.loads(result.stdout.decode())
        self.assertEqual(effective["hostname"], "relay.test")
        self.assertEqual(effective["listen"]["addresses"], ["127.0.0.1:2525"])
        again = self.check_config(relay, result.stdout.decode())
        self.assertEqual(again.returncode, 0, again.stderr)
        self.assertEqual(again.stdout, result.stdout, "the effective config does not read back the same")

        base = relay_harness.toml_text(relay.config(2525))
        cases = [
            ("unknown key", base.replace("[listen]\n", "[listen]\nbogus_key = 1\n"), "listen.bogus_key"),
            ("unknown section", base + "\n[nosuch]\nx = 1\n", "nosuch"),
            ("wrong type", base.replace("[listen]\n", "[listen]\nmax_recipients = \"many\"\n"), "listen.max_recipients"),
            ("out of range", base.replace("[listen]\n", "[listen]\nmax_recipients = 0\n"), "listen.max_recipients"),
            ("port out of range", base + "\n[delivery]\nport = 70000\n", "delivery.port"),
            ("bad duration", base.replace("[listen]\n", "[listen]\nidle_timeout = \"5 parsecs\"\n"), "listen.idle_timeout"),
            ("bad address", base.replace("127.0.0.0/8", "127.0.0.0/33"), "listen.allowed_networks"),
            ("bad log level", base.replace("format = \"json\"", "format = \"json\"\nlevel = \"loud\""), "log.level"),
            ("hostname type", base.replace("hostname = \"relay.test\"", "hostname = 5"), "hostname"),
            ("address without port", base.replace("127.0.0.1:2525", "127.0.0.1"), "listen.addresses"),
            ("retry_min above retry_max", base.replace("[queue]\n", "[queue]\nretry_min = \"2h\"\n"), "queue.retry_min"),
            ("not TOML", base + "\n[listen\n", None),
        ]
        for name, text, key in cases:
            with self.subTest(name):
                result = self.check_config(relay, text)
                self.assertEqual(result.returncode, 2, "exit %d, stdout %r stderr %r" % (result.returncode, result.stdout, result.stderr))
                if key is not None:
                    self.assertIn(key.encode(), result.stderr)

    def test_version(self):
        relay = self.relay()
        result = relay.cli("version")
        self.assertEqual(result.returncode, 0, result.stderr)
        text = result.stdout.decode().lower()
        for library in ("openssl", "c-ares", "asio", "spdlog", "sqlite"):
            self.assertIn(library, text)

    def test_health(self):
        relay = self.relay()
        relay.start()
        healthy = relay.cli("health")
        self.assertEqual(healthy.returncode, 0, healthy.stderr)
        self.assertRegex(healthy.stdout.decode(), r"^ok: 127\.0\.0\.1:%d 220 " % relay.port)
        relay.stop()

        # Nothing listening.
        down = relay.cli("health", "--timeout", "2")
        self.assertEqual(down.returncode, 1, down.stdout)
        self.assertIn(b"cannot connect to 127.0.0.1:%d" % relay.port, down.stderr)

        # Something listening that never greets: a hung relay.
        with socket.socket() as silent:
            silent.bind((relay.host, relay.port))
            silent.listen()
            hung = relay.cli("health", "--timeout", "0.5")
        self.assertEqual(hung.returncode, 1, hung.stdout)
        self.assertIn(b"no greeting from 127.0.0.1:%d within 500 ms" % relay.port, hung.stderr)

        # Something that greets with a refusal.
        with socket.socket() as refusing:
            refusing.bind((relay.host, relay.port))
            refusing.listen()
            def greet_with_a_refusal():
                connection, _ = refusing.accept()
                with connection:
                    connection.sendall(b"554 5.3.2 not now\r\n")
                    connection.recv(64)  # until health says QUIT or closes

            answer = threading.Thread(target=greet_with_a_refusal)
            answer.start()
            refused = relay.cli("health")
            answer.join()
        self.assertEqual(refused.returncode, 1, refused.stdout)
        self.assertIn(b'greeted with "554 5.3.2 not now"', refused.stderr)

    def test_queue_commands_while_the_daemon_runs(self):
        relay = self.relay()
        relay.start()
        client = smtp_client(relay)
        try:
            client.ehlo("client.test")
            queue_id = submit(client, "a@example.test", ["b@example.test"], simple_message("cli"))
            other_id = submit(client, "a@example.test", ["c@example.test"], simple_message("cli-2"))
            client.quit()
        finally:
            client.close()

        def held(message_id):
            entry = relay.queue_entry(message_id)
            self.assertIsNotNone(entry, "%s missing from queue list" % message_id)
            return entry["held"]

        self.assertIs(held(queue_id), False)
        text = relay.cli("queue", "list")
        self.assertEqual(text.returncode, 0, text.stderr)
        self.assertIn(queue_id.encode(), text.stdout)

        # The running daemon answers `queue flush` on its control socket.
        flushed = relay.cli("queue", "flush")
        self.assertEqual(flushed.returncode, 0, flushed.stderr)
        self.assertIn(b"flushed:", flushed.stdout)

        result = relay.cli("queue", "hold", queue_id)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIs(held(queue_id), True)
        self.assertIs(held(other_id), False)
        result = relay.cli("queue", "release", queue_id)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIs(held(queue_id), False)
        result = relay.cli("queue", "delete", queue_id)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIsNone(relay.queue_entry(queue_id))
        self.assertIsNotNone(relay.queue_entry(other_id))

        unknown = "0000000000ZZ"
        for command in ("hold", "release", "delete"):
            for message_id, status in ((queue_id, 1), (unknown, 1), ("not-an-id!", 2), ("0123", 2)):
                with self.subTest(command=command, id=message_id):
                    result = relay.cli("queue", command, message_id)
                    self.assertEqual(result.returncode, status,
                                     "queue %s %s: stdout %r stderr %r" % (command, message_id, result.stdout, result.stderr))
        self.assertEqual([entry["id"] for entry in relay.queue_list()], [other_id])

        # The daemon still works after the operator's changes.
        client = smtp_client(relay)
        try:
            client.ehlo("client.test")
            submit(client, "a@example.test", ["b@example.test"], simple_message("after-cli"))
            client.quit()
        finally:
            client.close()
        self.assertEqual(len(relay.queue_list()), 2)
        self.assertEqual(relay.stop(), 0)
        self.assertEqual(len(relay.queue_list()), 2, "queue list without the daemon")


class SizeLimitTest(RelayTestCase):
    def test_declared_and_actual_oversize(self):
        relay = self.relay({"listen": {"max_message_size": 10000}})
        relay.start()
        session = smtp_raw(relay.host, relay.port, timeout=SMTP_TIMEOUT)
        try:
            self.assertEqual(session.reply()[0], 220)
            code, lines = session.command(b"EHLO client.test")
            self.assertEqual(code, 250)
            self.assertIn(b"SIZE 10000", [line[4:] for line in lines], lines)

            code, lines = session.command(b"MAIL FROM:<a@example.test> SIZE=20000")
            self.assertEqual(code, 552, lines)
            self.assertTrue(lines[-1].startswith(b"552 5.3.4 "), lines)

            self.assertEqual(session.command(b"MAIL FROM:<a@example.test>")[0], 250)
            self.assertEqual(session.command(b"RCPT TO:<b@example.test>")[0], 250)
            self.assertEqual(session.command(b"DATA")[0], 354)
            big = simple_message("too-big", b"x" * 70 + b"\r\n") + (b"y" * 78 + b"\r\n") * 256  # 20 KB
            self.assertGreater(len(big), 20000)
            session.send(big + b".\r\n")
            code, lines = session.reply()
            self.assertEqual(code, 552, lines)

            # The session goes on, and a message within the limit is accepted.
            self.assertEqual(session.command(b"MAIL FROM:<a@example.test> SIZE=500")[0], 250)
            self.assertEqual(session.command(b"RCPT TO:<b@example.test>")[0], 250)
            self.assertEqual(session.command(b"DATA")[0], 354)
            small = simple_message("small")
            code, lines = session.command(small + b".")
            self.assertEqual(code, 250, lines)
            small_id = queue_id_from_reply(lines[0])
        finally:
            session.close()
        listing, contents = self.assertQueueConsistent(relay)
        self.assertEqual(list(contents), [small_id], "an oversize message was queued")


class StartTlsTest(RelayTestCase):
    def test_starttls_then_submit(self):
        relay = self.relay()
        cert = os.path.join(relay.directory, "c.pem")
        key = os.path.join(relay.directory, "k.pem")
        make_certificate(cert, key)
        relay.overrides = {"listen": {"tls_cert": cert, "tls_key": key}}
        relay.start()

        context = ssl.create_default_context(cafile=cert)
        client = smtp_client(relay)
        try:
            client.ehlo("client.test")
            self.assertTrue(client.has_extn("starttls"), client.ehlo_resp)
            client._host = "relay.test"  # the name the certificate is for
            code, reply = client.starttls(context=context)
            self.assertEqual(code, 220, reply)
            client.ehlo("client.test")
            self.assertFalse(client.has_extn("starttls"), "STARTTLS offered again inside TLS")
            queue_id = submit(client, "a@example.test", ["b@example.test"], simple_message("tls"))
            client.quit()
        finally:
            client.close()
        content = relay.stored_content(queue_id)
        header = received_prefix(content, simple_message("tls"))
        self.assertIn(b"with ESMTPS", header)
        relay.wait_for_event("queued", predicate=lambda event: event.get("queue_id") == queue_id)

    def test_commands_pipelined_after_starttls_are_discarded(self):
        # CVE-2011-0411 class: plaintext sent after STARTTLS, before the
        # handshake, must not be executed inside the TLS session.
        relay = self.relay()
        cert = os.path.join(relay.directory, "c.pem")
        key = os.path.join(relay.directory, "k.pem")
        make_certificate(cert, key)
        relay.overrides = {"listen": {"tls_cert": cert, "tls_key": key}}
        relay.start()
        plain = socket.create_connection((relay.host, relay.port), timeout=SMTP_TIMEOUT)
        session = relay_harness.RawSmtp(plain)
        try:
            self.assertEqual(session.reply()[0], 220)
            self.assertEqual(session.command(b"EHLO client.test")[0], 250)
            code, lines = session.command(b"STARTTLS\r\nMAIL FROM:<injected@example.test>")
            self.assertEqual(code, 220, lines)
            self.assertEqual(session.buffer, b"")
            context = ssl.create_default_context(cafile=cert)
            session.sock = context.wrap_socket(plain, server_hostname="relay.test")
            code, lines = session.command(b"EHLO client.test")
            self.assertEqual(code, 250, lines)
            self.assertEqual(lines[0], b"250-relay.test", "a reply to an injected command came first: %r" % lines)
            code, lines = session.command(b"RCPT TO:<b@example.test>")
            self.assertEqual(code, 503, "the injected MAIL FROM took effect: %r" % lines)
            self.assertEqual(session.command(b"QUIT")[0], 221)
        finally:
            session.close()
        self.assertEqual(relay.queue_list(), [])



def make_certificate(cert, key):
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-subj", "/CN=relay.test", "-addext", "subjectAltName=DNS:relay.test", "-days", "2",
         "-keyout", key, "-out", cert],
        check=True, capture_output=True, timeout=60,
    )


if __name__ == "__main__":
    relay_harness.main()
