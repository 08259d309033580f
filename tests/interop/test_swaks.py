"""Interop: swaks (Debian package) submits mail to the real stsrelay binary,
and each message must be queued.

swaks 20201014 (Debian 12) cannot send the BODY=8BITMIME or SMTPUTF8 MAIL
parameters (it builds "MAIL FROM:<addr>" with no parameters but PRDR), so an
8-bit body goes through swaks without BODY=, and the SMTPUTF8 case is driven
with Python's smtplib (mail_options=["SMTPUTF8"]).

Run: python3 test_swaks.py --stsrelay PATH [unittest args]
"""

import os
import re
import shutil
import smtplib
import subprocess
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration", "system"))

import relay_harness  # noqa: E402
from relay_harness import Relay, bare_address, queue_id_from_reply  # noqa: E402

SWAKS_TIMEOUT = 60


class SwaksTest(unittest.TestCase):
    relay = None

    @classmethod
    def setUpClass(cls):
        if shutil.which("swaks") is None:
            raise AssertionError("swaks is not installed (Debian package swaks)")
        cls.relay = Relay()
        try:
            cert = os.path.join(cls.relay.directory, "c.pem")
            key = os.path.join(cls.relay.directory, "k.pem")
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-subj", "/CN=relay.test", "-addext", "subjectAltName=DNS:relay.test", "-days", "2",
                 "-keyout", key, "-out", cert],
                check=True, capture_output=True, timeout=60,
            )
            cls.cert = cert
            cls.relay.overrides = {"listen": {"tls_cert": cert, "tls_key": key}}
            cls.relay.start()
        except BaseException:
            cls.relay.close()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            status = cls.relay.stop()
            problems = cls.relay.problems()
            if status != 0 or problems:
                raise AssertionError("stsrelay exit status %d, problems logged:\n%s"
                                     % (status, "\n".join(problems[:50])))
        finally:
            cls.relay.close()

    def swaks(self, *args, body=None):
        command = ["swaks", "--server", self.relay.host, "--port", str(self.relay.port),
                   "--helo", "client.test", "--from", "sender@example.test", *args]
        if body is not None:
            body_file = os.path.join(self.relay.directory, "body-%s.txt" % self.id().rsplit(".", 1)[-1])
            with open(body_file, "wb") as out:
                out.write(body)
            command += ["--body", "@" + body_file]
        result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, timeout=SWAKS_TIMEOUT)
        transcript = result.stdout.decode("utf-8", "replace") + result.stderr.decode("utf-8", "replace")
        self.assertEqual(result.returncode, 0, "swaks %s failed:\n%s\n%s" % (args, transcript, self.relay.log_text()))
        ids = re.findall(r"<[-~]\s+250 2\.0\.0 Ok: queued as (" + relay_harness.QUEUE_ID_PATTERN + ")", transcript)
        self.assertEqual(len(ids), 1, "no 'queued as' in the swaks transcript:\n" + transcript)
        return ids[0], transcript

    def assertQueued(self, queue_id, recipients):
        entry = self.relay.queue_entry(queue_id)
        self.assertIsNotNone(entry, "%s is not in queue list --json" % queue_id)
        self.assertEqual(bare_address(entry["sender"]), "sender@example.test")
        self.assertEqual([bare_address(r["address"]) for r in entry["recipients"]], recipients)
        self.assertTrue(all(r["status"] == "queued" for r in entry["recipients"]), entry)
        content = self.relay.stored_content(queue_id)
        self.assertEqual(entry["size"], len(content))
        self.assertTrue(content.startswith(b"Received: from "), content[:200])
        return content

    def test_plain(self):
        queue_id, _ = self.swaks("--to", "one@example.test,two@example.org", "--header", "Subject: plain",
                                 body=b"plain body\n.leading dot\nlast\n")
        content = self.assertQueued(queue_id, ["one@example.test", "two@example.org"])
        self.assertIn(b"\r\n\r\nplain body\r\n.leading dot\r\nlast\r\n", content)

    def test_eight_bit_body(self):
        body = "caf\u00e9 \u20ac gr\u00fc\u00dfe\n".encode("utf-8") + b"raw \x80\xfe\n"
        queue_id, _ = self.swaks("--to", "eight@example.test", "--header", "Subject: 8bit",
                                 "--add-header", "Content-Transfer-Encoding: 8bit", body=body)
        content = self.assertQueued(queue_id, ["eight@example.test"])
        self.assertIn(body.replace(b"\n", b"\r\n"), content)

    def test_pipelining(self):
        queue_id, transcript = self.swaks("--pipeline", "--to", "p1@example.test,p2@example.test,p3@example.test",
                                          "--header", "Subject: pipelined", body=b"pipelined\n")
        # One group: MAIL, every RCPT and DATA go out before the first reply.
        self.assertLess(transcript.index(" -> DATA"), transcript.index("<-  250 2.1.0"), transcript)
        self.assertQueued(queue_id, ["p1@example.test", "p2@example.test", "p3@example.test"])

    def test_starttls(self):
        queue_id, transcript = self.swaks("-tls", "--to", "tls@example.test", "--header", "Subject: tls",
                                          body=b"over tls\n")
        self.assertIn("TLS started", transcript)
        content = self.assertQueued(queue_id, ["tls@example.test"])
        header = content.split(b"\r\n\r\n", 1)[0]
        self.assertIn(b"with ESMTPS", header)

    def test_pipelining_over_starttls(self):
        queue_id, _ = self.swaks("-tls", "--pipeline", "--to", "tp@example.test", body=b"pipelined over tls\n")
        self.assertQueued(queue_id, ["tp@example.test"])

    def test_smtputf8_with_smtplib(self):
        # swaks cannot send the SMTPUTF8 parameter; Python's smtplib can.
        recipient = "ren\u00e9@example.test"
        sender = "s\u00e9nder@example.test"
        message = ("From: " + sender + "\r\nTo: " + recipient + "\r\nSubject: utf-8\r\n\r\nh\u00e9\r\n").encode("utf-8")
        client = smtplib.SMTP(timeout=30, local_hostname="client.test")
        try:
            client.connect(self.relay.host, self.relay.port)
            client.ehlo("client.test")
            self.assertTrue(client.has_extn("smtputf8"))
            code, reply = client.mail(sender, ["SMTPUTF8", "BODY=8BITMIME"])
            self.assertEqual(code, 250, reply)
            code, reply = client.rcpt(recipient)
            self.assertEqual(code, 250, reply)
            code, reply = client.data(message)
            self.assertEqual(code, 250, reply)
            client.quit()
        finally:
            client.close()
        queue_id = queue_id_from_reply(reply)
        entry = self.relay.queue_entry(queue_id)
        self.assertIsNotNone(entry)
        self.assertEqual(bare_address(entry["sender"]), sender)
        self.assertEqual([bare_address(r["address"]) for r in entry["recipients"]], [recipient])
        content = self.relay.stored_content(queue_id)
        self.assertTrue(content.endswith(message))
        self.assertIn(b"with UTF8SMTP", content.split(b"\r\n\r\n", 1)[0])


if __name__ == "__main__":
    relay_harness.main()
