"""Interop with Postfix on both sides of a running `stsrelay run`.

Behind: private Postfix instances (postfix.PostfixInstance) are the
destination MX hosts, one per 127.0.0.x address, all on the relay's
delivery.port, each delivering into Maildirs (virtual(8), one catch-all
Maildir per recipient domain) that the test reads. Their STARTTLS
certificates come from a test CA made here: valid, for another name,
expired, from another CA, none at all, and TLS 1.3 only. unbound serves the
zone and nginx the MTA-STS policies (peers.py), as in delivery_interop.py.

In front: Postfix instances as the internal mail server with
`relayhost = [127.0.0.1]:PORT` (the relay), one in plaintext and one with
mandatory STARTTLS to the relay's listener; mail enters them by sendmail(1)
and by swaks.

Connection reuse: ten messages for one domain whose MX (a Postfix instance
of its own) only that scenario uses; its log shows how many smtpd sessions
carried them, how many were open at once (the relay runs with
delivery.max_connections_per_domain = 2) and each session's STARTTLS.

Each scenario has its own recipient domain. Every wait is on an event (a log
line, a Maildir file, the queue listing) with a timeout; nothing asserts on
timings.

Run: /usr/bin/python3 -B postfix_interop.py --stsrelay PATH [unittest args]
"""

import atexit
import email
import email.policy
import os
import pwd
import re
import shutil
import signal
import smtplib
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "integration", "system"))

import relay_harness  # noqa: E402
from peers import (WAIT_TIMEOUT, Peers, TestCa, free_port, free_port_on_all, issue_expired,  # noqa: E402
                   policy_site, relay_overrides, require_programs, wait_until)
from postfix import PostfixInstance, start_all  # noqa: E402
from relay_harness import Relay, bare_address, queue_id_from_reply  # noqa: E402

SMTP_TIMEOUT = 120
BIG_MESSAGE_SIZE = 20 * 1024 * 1024

DNS_ADDRESS = "127.0.0.40"
POLICY_ADDRESS = "127.0.0.41"
TLS_1_2_OR_NEWER = ("TLSv1.2", "TLSv1.3")


class Mx:
    """One Postfix MX host: its name, address and what its STARTTLS offers."""

    def __init__(self, key, address, tls, cert_names=None, main=None):
        self.key = key
        self.name = key + ".pfxmx.test"
        self.address = address
        self.tls = tls  # "test-ca", "other-ca", "expired" or None (no STARTTLS)
        self.cert_names = cert_names or [self.name]
        self.main = main or {}
        self.postfix = None  # the PostfixInstance, once started


VALID = Mx("valid", "127.0.0.42", "test-ca")
WRONG_NAME = Mx("wrong-name", "127.0.0.43", "test-ca", cert_names=["someone-else.pfxmx.test"])
EXPIRED = Mx("expired", "127.0.0.44", "expired")
UNTRUSTED = Mx("untrusted", "127.0.0.45", "other-ca")
PLAIN = Mx("plain", "127.0.0.46", None)
TLS13 = Mx("tls13", "127.0.0.47", "test-ca",
           main={"smtpd_tls_protocols": ">=TLSv1.3", "smtpd_tls_mandatory_protocols": ">=TLSv1.3"})
# Does not offer PIPELINING: the relay must wait for each reply.
NO_PIPELINING_MX = Mx("no-pipelining", "127.0.0.50", "test-ca", main={"smtpd_discard_ehlo_keywords": "pipelining"})
# Only the connection-reuse scenario sends here: every session in its log is
# one of that scenario's.
REUSE_MX = Mx("reuse", "127.0.0.51", "test-ca")
MX_HOSTS = [VALID, WRONG_NAME, EXPIRED, UNTRUSTED, PLAIN, TLS13, NO_PIPELINING_MX, REUSE_MX]

FRONT_PLAIN_ADDRESS = "127.0.0.48"
FRONT_TLS_ADDRESS = "127.0.0.49"


class Domain:
    """A recipient domain: its MX host and MTA-STS policy mode (None: no policy)."""

    def __init__(self, label, mx, mode=None, sender=None):
        self.name = label + ".pfx.test"
        self.mx = mx
        self.mode = mode
        self.sender = sender or label + "@client.test"
        self.recipient = "rcpt@" + self.name

    def policy_text(self):
        return "version: STSv1\r\nmode: %s\r\nmx: %s\r\nmax_age: 86400\r\n" % (self.mode, self.mx.name)


ENFORCE_VALID = Domain("enforce-valid", VALID, "enforce")
ENFORCE_WRONG_NAME = Domain("enforce-wrong-name", WRONG_NAME, "enforce")
ENFORCE_EXPIRED = Domain("enforce-expired", EXPIRED, "enforce")
ENFORCE_UNTRUSTED = Domain("enforce-untrusted", UNTRUSTED, "enforce")
ENFORCE_PLAIN = Domain("enforce-plain", PLAIN, "enforce")
ENFORCE_TLS13 = Domain("enforce-tls13", TLS13, "enforce")
TESTING_EXPIRED = Domain("testing-expired", EXPIRED, "testing")
NONE_PLAIN = Domain("none-plain", PLAIN)
FRONT_PLAIN = Domain("front-plain", VALID, "enforce")
FRONT_TLS = Domain("front-tls", VALID, "enforce")
SENDERS = Domain("senders", VALID)  # where PIPELINING's bounce goes
PIPELINING = Domain("pipelining", VALID, "enforce", sender="pipelining@" + SENDERS.name)
NO_PIPELINING = Domain("no-pipelining", NO_PIPELINING_MX, "enforce")
BIG = Domain("big", VALID, "enforce")
EIGHT_BIT = Domain("eight-bit", VALID, "enforce")
UTF8 = Domain("utf8", VALID, "enforce")
REUSE = Domain("reuse", REUSE_MX, "enforce")
MANY = [Domain("many1", VALID, "enforce"), Domain("many2", VALID, "enforce"), Domain("many3", VALID),
        Domain("many4", TLS13, "enforce"), Domain("many5", PLAIN)]
DOMAINS = [ENFORCE_VALID, ENFORCE_WRONG_NAME, ENFORCE_EXPIRED, ENFORCE_UNTRUSTED, ENFORCE_PLAIN, ENFORCE_TLS13,
           TESTING_EXPIRED, NONE_PLAIN, FRONT_PLAIN, FRONT_TLS, PIPELINING, NO_PIPELINING, SENDERS, BIG, EIGHT_BIT,
           UTF8, REUSE, *MANY]

# The relay's delivery.max_connections_per_domain; only REUSE has more than
# one message in flight at a time.
MAX_CONNECTIONS_PER_DOMAIN = 2
REUSE_MESSAGES = 10

# The MX hosts refuse this recipient (in the middle of the pipelined group).
REFUSED = "refused@" + PIPELINING.name


def zone_records():
    records = []
    for domain in DOMAINS:
        records.append("%s. 300 IN MX 10 %s." % (domain.name, domain.mx.name))
        if domain.mode is not None:
            records.append("mta-sts.%s. 300 IN A %s" % (domain.name, POLICY_ADDRESS))
            records.append('_mta-sts.%s. 300 IN TXT "v=STSv1; id=20240101"' % domain.name)
    for host in MX_HOSTS:
        records.append("%s. 300 IN A %s" % (host.name, host.address))
    return records



def crlf(text):
    return text.replace("\n", "\r\n").encode("utf-8")


def make_message(domain, subject, body=None, recipients=None, extra_headers=""):
    """A message as submitted (CRLF line ends): headers that must arrive
    intact, including a folded one, and a body with lines that SMTP
    dot-stuffing must restore."""
    if body is None:
        body = ("Body of %s.\n"
                ".a line that starts with a dot\n"
                "..two dots\n"
                ".\n"
                "  leading spaces and trailing spaces  \n"
                "\n"
                "last line\n") % subject
    headers = ("From: <%s>\n"
               "To: %s\n"
               "Subject: %s\n"
               "Date: Fri, 04 Dec 2026 10:00:00 +0000\n"
               "Message-ID: <%s@client.test>\n"
               "X-Folded: first part\n"
               "\tsecond part\n" % (domain.sender, ", ".join("<%s>" % r for r in recipients or [domain.recipient]),
                                    subject, re.sub(r"[^a-z0-9]", "-", subject.lower()))) + extra_headers
    return crlf(headers + "\n" + body)


def split_message(data):
    """(header lines as unfolded-list of raw header blocks, body) of a Maildir
    file (LF line ends)."""
    head, _, body = data.partition(b"\n\n")
    blocks = []
    for line in head.split(b"\n"):
        if line[:1] in (b" ", b"\t") and blocks:
            blocks[-1] += b"\n" + line
        else:
            blocks.append(line)
    return blocks, body


def lf(data):
    return data.replace(b"\r\n", b"\n")


class SmtpdSession:
    """One smtpd session in a Postfix log: from its `connect from` line to
    its `disconnect from` line (line numbers; end None while it lasts), with
    the queue ids of the messages it took, its TLS lines and the command
    counts Postfix logs at disconnect ("mail=5", or "mail=4/5" when one failed)."""

    def __init__(self, pid, start):
        self.pid = pid
        self.start = start
        self.end = None
        self.queue_ids = []
        self.tls = []
        self.counts = {}
        self.failed_commands = []


def smtpd_sessions(lines):
    """The smtpd sessions of a Postfix log, in the order they began. One smtpd
    process serves sessions one after another: a pid's lines belong to the
    session its last `connect from` began."""
    sessions, current = [], {}
    for number, line in enumerate(lines):
        match = re.search(r"/smtpd\[(\d+)\]: (.*)$", line)
        if not match:
            continue
        pid, text = match.groups()
        if text.startswith("connect from "):
            current[pid] = SmtpdSession(pid, number)
            sessions.append(current[pid])
            continue
        session = current.get(pid)
        if session is None:
            continue
        queued = re.match(r"([0-9A-Za-z]+): client=", text)
        if queued:
            session.queue_ids.append(queued.group(1))
        elif "TLS connection established from" in text:
            session.tls.append(text)
        elif text.startswith("disconnect from "):
            session.end = number
            for name, good, tried in re.findall(r"\b([a-z]+)=(\d+)(?:/(\d+))?", text):
                session.counts[name] = int(good)
                if tried and tried != good:
                    session.failed_commands.append("%s=%s/%s" % (name, good, tried))
            del current[pid]
    return sessions


def most_at_once(sessions):
    """The most sessions open at the same time, by the order of the log's
    connect and disconnect lines (a session still open counts to the end)."""
    changes = sorted([(session.start, 1) for session in sessions]
                     + [(session.end, -1) for session in sessions if session.end is not None])
    most = running = 0
    for _, change in changes:
        running += change
        most = max(most, running)
    return most


class PostfixInterop(unittest.TestCase):
    directory = None
    peers = None
    relay = None
    instances = []

    @classmethod
    def setUpClass(cls):
        require_programs("unbound", "nginx", "openssl", "swaks", "postfix", "sendmail", "script")
        cls.directory = tempfile.mkdtemp(prefix="stsrelay-postfix-")
        os.chmod(cls.directory, 0o755)  # nginx workers and Postfix's daemons read inside
        cls.peers = Peers(cls.directory)
        cls.instances = []
        try:
            cls.start_peers()
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

        # The MX hosts: every one takes mail for every test domain, into a
        # Maildir per domain, as the postfix user.
        postfix_user = pwd.getpwnam("postfix")
        mailboxes = "inline:{ %s }" % ", ".join("{@%s=%s/}" % (d.name, d.name) for d in DOMAINS)
        cls.mx_port = free_port_on_all([host.address for host in MX_HOSTS])
        for host in MX_HOSTS:
            main = {
                "virtual_mailbox_domains": ", ".join(domain.name for domain in DOMAINS),
                "virtual_mailbox_base": cls.mailbox_base(host),
                "virtual_mailbox_maps": mailboxes,
                "virtual_uid_maps": "static:%d" % postfix_user.pw_uid,
                "virtual_gid_maps": "static:%d" % postfix_user.pw_gid,
                "virtual_mailbox_limit": "0",
                "message_size_limit": str(2 * BIG_MESSAGE_SIZE + 1024 * 1024),
                "smtputf8_enable": "yes",
                # Postfix's hardening against SMTP smuggling: a client that
                # talks ahead where RFC 2920 forbids it (before the greeting,
                # after EHLO, STARTTLS or DATA), or sends a bare LF, is logged
                # and dropped.
                "smtpd_forbid_unauth_pipelining": "yes",
                "smtpd_forbid_bare_newline": "yes",
                # Headers exactly as the relay sent them: no rewriting for
                # clients on the instance's own addresses.
                "local_header_rewrite_clients": "",
                "smtpd_recipient_restrictions": "check_recipient_access inline:{ {%s=550 5.1.1 no such user} },"
                                                " permit_mynetworks, reject_unauth_destination" % REFUSED,
            }
            if host.tls is not None:
                if host.tls == "expired":
                    cert, key = issue_expired(ca, host.key, host.cert_names)
                else:
                    cert, key = (ca if host.tls == "test-ca" else other_ca).issue(host.key, host.cert_names)
                main.update({"smtpd_tls_security_level": "may", "smtpd_tls_chain_files": "%s, %s" % (key, cert)})
            main.update(host.main)
            os.makedirs(cls.mailbox_base(host))
            os.chown(cls.mailbox_base(host), postfix_user.pw_uid, postfix_user.pw_gid)
            host.postfix = cls.new_postfix("mx-" + host.key, host.address, cls.mx_port, host.name, main)
        start_all([host.postfix for host in MX_HOSTS])

        relay_cert, relay_key = ca.issue("relay", ["relay.test"])
        cls.relay = Relay()
        cls.relay.overrides = relay_overrides(
            cls.mx_port, cls.ca_file, "%s:%d" % (DNS_ADDRESS, cls.dns_port), cls.policy_port,
            delivery={"command_timeout": "60s", "max_connections_per_domain": MAX_CONNECTIONS_PER_DOMAIN})
        cls.relay.overrides["listen"] = {"tls_cert": relay_cert, "tls_key": relay_key}
        cls.relay.start()

        # The internal mail servers in front of the relay.
        relayhost = "[%s]:%d" % (cls.relay.host, cls.relay.port)
        cls.front_plain = cls.new_postfix("front-plain", FRONT_PLAIN_ADDRESS, free_port(FRONT_PLAIN_ADDRESS),
                                          "front-plain.internal.test", {"relayhost": relayhost})
        cls.front_tls = cls.new_postfix("front-tls", FRONT_TLS_ADDRESS, free_port(FRONT_TLS_ADDRESS),
                                        "front-tls.internal.test",
                                        {"relayhost": relayhost, "smtp_tls_security_level": "encrypt",
                                         "smtp_tls_CAfile": cls.ca_file})
        start_all([cls.front_plain, cls.front_tls])

    @classmethod
    def new_postfix(cls, name, address, port, hostname, main):
        """A Postfix instance, not yet started, that cleanup() will stop."""
        instance = PostfixInstance(os.path.join(cls.directory, name), name, address, port, hostname, main)
        cls.instances.append(instance)
        return instance

    @classmethod
    def mailbox_base(cls, host):
        return os.path.join(cls.directory, "mailboxes", host.key)

    @classmethod
    def cleanup(cls):
        """Stops everything this class started and removes its files; safe to
        call again (it also runs at exit, for a run cut short)."""
        try:
            if cls.relay is not None:
                cls.relay.close()
                cls.relay = None
        finally:
            try:
                for instance in reversed(cls.instances):
                    try:
                        instance.stop()
                    except Exception as error:  # stop the others all the same
                        sys.stderr.write("stopping %s: %s\n" % (instance.name, error))
            finally:
                try:
                    if cls.peers is not None:
                        cls.peers.stop()
                finally:
                    if cls.directory is not None:
                        shutil.rmtree(cls.directory, ignore_errors=True)
                        cls.directory = None

    @classmethod
    def tearDownClass(cls):
        try:
            cls.relay.stop_and_check()
            for instance in cls.instances:
                bad = [line for line in instance.log_lines()
                       if re.search(r"\b(panic|fatal):|improper command pipelining|bare <LF>", line)]
                if bad:
                    raise AssertionError("%s logged:\n%s" % (instance.name, "\n".join(bad[:20])))
        finally:
            cls.cleanup()

    # -- what the MX hosts delivered ---------------------------------------

    def maildir(self, host, domain):
        """The messages HOST's virtual(8) delivered for DOMAIN, as bytes."""
        new = os.path.join(self.mailbox_base(host), domain.name, "new")
        if not os.path.isdir(new):
            return []
        messages = []
        for name in sorted(os.listdir(new)):
            with open(os.path.join(new, name), "rb") as message:
                messages.append(message.read())
        return messages

    def delivered_anywhere(self, domain):
        return [message for host in MX_HOSTS for message in self.maildir(host, domain)]

    def wait_for_maildir(self, domain, count=1):
        host = domain.mx
        return wait_until(lambda: len(self.maildir(host, domain)) >= count and self.maildir(host, domain),
                          "%d message(s) for %s in %s's Maildir" % (count, domain.name, host.name),
                          details=lambda: self.relay.log_text() + "\n" + host.postfix.log_text())

    def details(self, *instances):
        return lambda: "\n".join([self.relay.log_text()] + [instance.log_text() for instance in instances])

    # -- the relay ---------------------------------------------------------

    def submit(self, sender, recipients, message, mail_options=(), host=None, port=None):
        """One SMTP transaction with the relay (smtplib, so the bytes are
        exactly MESSAGE); returns its queue id."""
        client = smtplib.SMTP(host or self.relay.host, port or self.relay.port, timeout=SMTP_TIMEOUT,
                              local_hostname="client.test")
        try:
            client.ehlo()
            code, reply = client.mail(sender, list(mail_options))
            self.assertEqual(code, 250, reply)
            for recipient in recipients:
                code, reply = client.rcpt(recipient)
                self.assertEqual(code, 250, "%s: %s" % (recipient, reply))
            code, reply = client.data(message)
            self.assertEqual(code, 250, reply)
            client.quit()
        finally:
            client.close()
        queue_id = queue_id_from_reply(reply)
        self.assertIsNotNone(queue_id, reply)
        return queue_id

    def outcome(self, status, queue_id, min_attempts=1, domain=None):
        """The relay's log line STATUS (sent/deferred/bounced) for QUEUE_ID (and DOMAIN)."""
        return self.relay.wait_for_event(status, timeout=WAIT_TIMEOUT,
                                         predicate=lambda e: e.get("queue_id") == queue_id
                                         and e.get("attempts", 0) >= min_attempts
                                         and (domain is None or e.get("domain") == domain.name))

    def events_for(self, name, queue_id):
        return [event for event in self.relay.events_named(name) if event.get("queue_id") == queue_id]

    def wait_gone_from_queue(self, queue_id):
        wait_until(lambda: self.relay.queue_entry(queue_id) is None, "%s leaving the queue" % queue_id,
                   details=self.relay.log_text)

    # -- assertions on both sides ------------------------------------------

    def assertArrivedIntact(self, data, submitted, host, queue_id, tls_version, protocol=None):
        """DATA (a Maildir file) is SUBMITTED with, on top, Postfix's own
        delivery headers, its Received (TLS details as TLS_VERSION says; None:
        plaintext) and the relay's Received (id QUEUE_ID); headers intact and
        the body byte for byte (Maildir files end lines in LF)."""
        blocks, body = split_message(data)
        sent_blocks, sent_body = split_message(lf(submitted))
        self.assertEqual(body, sent_body, "the body changed on the way")
        self.assertEqual(blocks[-len(sent_blocks):], sent_blocks, "the original headers changed:\n%r" % data[:3000])
        added = blocks[:-len(sent_blocks)]
        names = [block.split(b":", 1)[0].lower() for block in added]
        self.assertEqual(names[:3], [b"return-path", b"x-original-to", b"delivered-to"], added)
        received = [block.decode("utf-8", "replace") for block in added if block.lower().startswith(b"received:")]
        self.assertGreaterEqual(len(received), 2, added)
        postfix_received, relay_received = received[0], received[1]
        # Postfix's: from the relay's EHLO name, by the MX, TLS as negotiated.
        self.assertRegex(postfix_received, r"^Received: from relay\.test \(")
        protocol = protocol or ("ESMTPS" if tls_version else "ESMTP")
        self.assertIn("by %s (Postfix) with %s id " % (host.name, protocol), postfix_received)
        if tls_version:
            self.assertIn("(using %s with cipher " % tls_version, postfix_received)
        else:
            self.assertNotIn("using TLS", postfix_received)
        # The relay's, just below: its queue id.
        self.assertRegex(relay_received, r"^Received: from \S+ \(")
        self.assertIn("by relay.test (stsrelay) with ", relay_received)
        self.assertIn(" id %s" % queue_id, relay_received)
        return received

    def assertDelivered(self, domain, queue_id, submitted, tls=True, recipients=None, protocol=None):
        """One copy of SUBMITTED in DOMAIN's Maildir on its MX (none anywhere
        else), the relay's `sent` line matching Postfix's view; returns (sent,
        the Maildir file)."""
        host = domain.mx
        sent = self.outcome("sent", queue_id, domain=domain)
        self.assertEqual(sent["recipients"], ["<%s>" % r for r in recipients or [domain.recipient]], sent)
        self.assertEqual((sent["mx"], sent["ip"]), (host.name, host.address), sent)
        self.assertTrue(sent["reply"].startswith("250"), sent)
        [data] = self.wait_for_maildir(domain)
        self.assertEqual(len(self.delivered_anywhere(domain)), 1, "delivered more than once")
        if tls:
            self.assertIn(sent["tls_version"], TLS_1_2_OR_NEWER, sent)
        else:
            self.assertEqual(sent["tls_version"], "", sent)
        self.assertArrivedIntact(data, submitted, host, queue_id, sent["tls_version"] or None, protocol)
        # Postfix's queue id is in the relay's log line ("queued as ..."):
        # Postfix logged that id's delivery into the Maildir.
        match = re.search(r"queued as ([0-9A-Za-z]+)", sent["reply"])
        self.assertIsNotNone(match, sent)
        postfix_id = match.group(1)
        wait_until(lambda: [line for line in host.postfix.log_lines()
                            if "%s: to=<%s>" % (postfix_id, recipients[0] if recipients else domain.recipient)
                            in line and "status=sent (delivered to maildir)" in line],
                   "Postfix logging the delivery of %s" % postfix_id, details=self.details(host.postfix))
        self.wait_gone_from_queue(queue_id)
        return sent, data

    def assertHeldBack(self, domain, queue_id, reason):
        """Deferred on two attempts in a row, REASON (an RFC 8460 result type)
        in the log line and in `queue list --json`; the MX never took so much
        as a MAIL command for it, and its Maildir stays empty."""
        host = domain.mx
        first = self.outcome("deferred", queue_id)
        deferred = self.outcome("deferred", queue_id, min_attempts=first["attempts"] + 1)
        for event in (first, deferred):
            self.assertEqual(event["policy_mode"], "enforce", event)
            self.assertEqual(event["verification"], reason, event)
            self.assertEqual((event["mx"], event["ip"]), (host.name, host.address), event)
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
        self.assertEqual(self.delivered_anywhere(domain), [])
        # Postfix's side: the relay connected, and never named the sender.
        log = host.postfix.log_lines()
        self.assertTrue([line for line in log if "smtpd[" in line and "connect from" in line],
                        host.postfix.log_text())
        self.assertEqual([line for line in log if domain.sender in line], [], "the MX saw the sender")
        return deferred, log

    # -- behind: the MTA-STS matrix against Postfix MX hosts ---------------

    def test_enforce_valid_certificate_delivers_over_tls(self):
        message = make_message(ENFORCE_VALID, "enforce valid")
        queue_id = self.submit(ENFORCE_VALID.sender, [ENFORCE_VALID.recipient], message)
        sent, data = self.assertDelivered(ENFORCE_VALID, queue_id, message)
        self.assertEqual((sent["policy_mode"], sent["policy_id"], sent["verification"]),
                         ("enforce", "20240101", "valid"), sent)
        self.assertTrue(sent["tls_cipher"], sent)
        # Postfix's log of the same session: an anonymous TLS session (no
        # client certificate) of the version the relay logged.
        log = VALID.postfix.log_text(tail=200000)
        self.assertRegex(log, r"Anonymous TLS connection established from \S+: %s with cipher %s"
                         % (re.escape(sent["tls_version"]), re.escape(sent["tls_cipher"])))
        self.assertIn(b"Delivered-To: " + ENFORCE_VALID.recipient.encode(), data)

    def test_enforce_wrong_name_defers(self):
        queue_id = self.submit(ENFORCE_WRONG_NAME.sender, [ENFORCE_WRONG_NAME.recipient],
                               make_message(ENFORCE_WRONG_NAME, "enforce wrong name"))
        self.assertHeldBack(ENFORCE_WRONG_NAME, queue_id, "certificate-host-mismatch")

    def test_enforce_expired_certificate_defers(self):
        queue_id = self.submit(ENFORCE_EXPIRED.sender, [ENFORCE_EXPIRED.recipient],
                               make_message(ENFORCE_EXPIRED, "enforce expired"))
        self.assertHeldBack(ENFORCE_EXPIRED, queue_id, "certificate-expired")

    def test_enforce_untrusted_certificate_defers(self):
        queue_id = self.submit(ENFORCE_UNTRUSTED.sender, [ENFORCE_UNTRUSTED.recipient],
                               make_message(ENFORCE_UNTRUSTED, "enforce untrusted"))
        self.assertHeldBack(ENFORCE_UNTRUSTED, queue_id, "certificate-not-trusted")

    def test_enforce_without_starttls_defers_never_plaintext(self):
        queue_id = self.submit(ENFORCE_PLAIN.sender, [ENFORCE_PLAIN.recipient],
                               make_message(ENFORCE_PLAIN, "enforce plain"))
        _, log = self.assertHeldBack(ENFORCE_PLAIN, queue_id, "starttls-not-supported")
        # Postfix never offered STARTTLS, and nothing was sent in its place.
        self.assertEqual([line for line in log if "TLS connection established" in line], [])

    def test_enforce_tls13_only_mx_delivers_over_tls13(self):
        message = make_message(ENFORCE_TLS13, "enforce tls13")
        queue_id = self.submit(ENFORCE_TLS13.sender, [ENFORCE_TLS13.recipient], message)
        sent, _ = self.assertDelivered(ENFORCE_TLS13, queue_id, message)
        self.assertEqual((sent["tls_version"], sent["verification"]), ("TLSv1.3", "valid"), sent)
        self.assertIn("TLS connection established from", TLS13.postfix.log_text(tail=200000))

    def test_testing_expired_certificate_delivers_with_a_warning(self):
        message = make_message(TESTING_EXPIRED, "testing expired")
        queue_id = self.submit(TESTING_EXPIRED.sender, [TESTING_EXPIRED.recipient], message)
        sent, _ = self.assertDelivered(TESTING_EXPIRED, queue_id, message)
        self.assertEqual((sent["policy_mode"], sent["verification"]), ("testing", "certificate-expired"), sent)
        [warning] = self.events_for("sts_testing_failure", queue_id)
        self.assertEqual(warning["level"], "warn", warning)
        self.assertEqual((warning["domain"], warning["mx"], warning["result_type"]),
                         (TESTING_EXPIRED.name, EXPIRED.name, "certificate-expired"), warning)

    def test_no_policy_without_starttls_delivers_in_plaintext(self):
        message = make_message(NONE_PLAIN, "none plain")
        queue_id = self.submit(NONE_PLAIN.sender, [NONE_PLAIN.recipient], message)
        sent, _ = self.assertDelivered(NONE_PLAIN, queue_id, message, tls=False)
        self.assertEqual(sent["policy_mode"], "none", sent)

    # -- in front: Postfix relaying through stsrelay -----------------------

    def assertRelayedByFront(self, front, domain, submitted, queue_id_hint=None):
        """The front Postfix logged status=sent to the relay, and the message
        reached DOMAIN's Maildir with the whole Received chain; returns the
        relay's `sent` line and the Received headers."""
        status = wait_until(lambda: [line for line in front.log_lines()
                                     if "to=<%s>" % domain.recipient in line and "status=" in line],
                            "%s logging the relay's answer" % front.name, details=self.details(front))
        relay_to = "relay=%s[%s]:%d" % (self.relay.host, self.relay.host, self.relay.port)
        self.assertIn(relay_to, status[0], status)
        self.assertIn("status=sent", status[0], status)
        queue_id = re.search(r"queued as (%s)" % relay_harness.QUEUE_ID_PATTERN, status[0])
        self.assertIsNotNone(queue_id, status)
        queue_id = queue_id.group(1)
        sent = self.outcome("sent", queue_id)
        [data] = self.wait_for_maildir(domain)
        self.assertEqual(len(self.delivered_anywhere(domain)), 1)
        blocks, body = split_message(data)
        self.assertEqual(body, split_message(lf(submitted))[1], "the body changed on the way")
        sent_blocks = split_message(lf(submitted))[0]
        for block in sent_blocks:
            self.assertIn(block, blocks, "a header changed on the way")
        received = [block.decode("utf-8", "replace") for block in blocks if block.lower().startswith(b"received:")]
        # Top down: the MX's, the relay's (from the front Postfix), the front's own.
        self.assertGreaterEqual(len(received), 3, received)
        self.assertIn("by %s (Postfix) with ESMTPS id" % domain.mx.name, received[0])
        self.assertIn("(using %s with cipher" % sent["tls_version"], received[0])
        self.assertRegex(received[1], r"^Received: from %s \(" % re.escape(front.hostname))
        self.assertIn("by relay.test (stsrelay)", received[1])
        self.assertIn(" id %s" % queue_id, received[1])
        self.assertRegex(received[2], r"\bby %s \(Postfix\b" % re.escape(front.hostname))
        wait_until(front.queue_is_empty, "%s's queue emptying" % front.name, details=self.details(front))
        self.wait_gone_from_queue(queue_id)
        return sent, received

    def test_front_postfix_relays_in_plaintext_through_the_relay(self):
        message = make_message(FRONT_PLAIN, "front plain")
        self.front_plain.sendmail(FRONT_PLAIN.sender, [FRONT_PLAIN.recipient], message)
        sent, received = self.assertRelayedByFront(self.front_plain, FRONT_PLAIN, message)
        self.assertEqual((sent["policy_mode"], sent["verification"]), ("enforce", "valid"), sent)
        # Plain SMTP between the front Postfix and the relay.
        self.assertNotIn("using TLS", received[1])
        self.assertIn("with ESMTP id", received[1])
        self.assertIn("(Postfix, from userid 0)", received[2])  # sendmail, then pickup
        self.assertEqual([line for line in self.front_plain.log_lines() if "TLS connection established" in line], [])

    def test_front_postfix_relays_over_starttls_through_the_relay(self):
        message = make_message(FRONT_TLS, "front tls")
        result = subprocess.run(["swaks", "--server", FRONT_TLS_ADDRESS, "--port", str(self.front_tls.port),
                                 "--helo", "client.test", "--from", FRONT_TLS.sender, "--to", FRONT_TLS.recipient,
                                 "--data", "-"],
                                # swaks ends the data with CRLF . CRLF itself.
                                input=message[:-2], capture_output=True, timeout=SMTP_TIMEOUT)
        self.assertEqual(result.returncode, 0, result.stdout.decode(errors="replace") + self.front_tls.log_text())
        sent, received = self.assertRelayedByFront(self.front_tls, FRONT_TLS, message)
        self.assertEqual((sent["policy_mode"], sent["verification"]), ("enforce", "valid"), sent)
        # STARTTLS between the front Postfix and the relay, the relay's
        # certificate verified against the test CA.
        self.assertRegex(received[1], r"\(using TLSv1\.[23] with cipher ")
        self.assertIn("with ESMTPS id", received[1])
        established = [line for line in self.front_tls.log_lines()
                       if "TLS connection established to %s[%s]:%d" % (self.relay.host, self.relay.host,
                                                                       self.relay.port) in line]
        self.assertTrue(established, self.front_tls.log_text())
        self.assertIn("Trusted TLS connection", established[0])

    # -- what only real peers exercise -------------------------------------

    def test_pipelined_transaction_with_one_recipient_refused(self):
        """Postfix answers the relay's pipelined MAIL/RCPT/RCPT/RCPT/DATA group
        with a 550 in the middle: the others are delivered once, the refused
        one bounces to the sender, whose domain's Maildir gets the DSN."""
        accepted = ["first@" + PIPELINING.name, "second@" + PIPELINING.name]
        recipients = [accepted[0], REFUSED, accepted[1]]
        message = make_message(PIPELINING, "pipelining", recipients=recipients)
        queue_id = self.submit(PIPELINING.sender, recipients, message)
        sent = self.outcome("sent", queue_id)
        self.assertEqual(sent["recipients"], ["<%s>" % r for r in accepted], sent)
        bounced = self.outcome("bounced", queue_id)
        self.assertEqual(bounced["recipients"], ["<%s>" % REFUSED], bounced)
        self.assertIn("550 5.1.1", bounced["reply"], bounced)
        copies = self.wait_for_maildir(PIPELINING, count=2)
        self.assertEqual(len(copies), 2, copies)
        delivered_to = sorted(re.search(rb"^Delivered-To: (\S+)$", copy, re.M).group(1).decode() for copy in copies)
        self.assertEqual(delivered_to, sorted(accepted))
        for copy in copies:
            self.assertArrivedIntact(copy, message, VALID, queue_id, sent["tls_version"])
        # Postfix's side: one transaction for the three, the 550 logged
        # under the queue id of the message it then delivered to the two.
        log = VALID.postfix.log_lines()
        rejected = [re.search(r" ([0-9A-F]+): reject: RCPT from .*: 550 5\.1\.1 <%s>.* from=<%s>"
                              % (re.escape(REFUSED), re.escape(PIPELINING.sender)), line) for line in log]
        rejected = [match.group(1) for match in rejected if match]
        self.assertEqual(len(rejected), 1, VALID.postfix.log_text())
        queued = [line for line in log if "%s: from=<%s>" % (rejected[0], PIPELINING.sender) in line]
        self.assertEqual(len(queued), 1, VALID.postfix.log_text())
        self.assertIn("nrcpt=2", queued[0])
        self.assertIn("queued as %s" % rejected[0], sent["reply"])

        # The bounce reaches the sender's domain's Maildir.
        notice = self.relay.wait_for_event("bounce_queued", predicate=lambda e: e.get("original_id") == queue_id)
        self.outcome("sent", notice["queue_id"])
        [dsn] = self.wait_for_maildir(SENDERS)
        self.assertIn(b"Return-Path: <>", dsn)
        report = email.message_from_bytes(dsn, policy=email.policy.compat32)
        self.assertEqual(report.get_content_type(), "multipart/report")
        text = dsn.decode("utf-8", "replace")
        self.assertRegex(text, r"Final-Recipient: rfc822; ?" + re.escape(REFUSED))
        self.assertIn("Status: 5.1.1", text)
        self.wait_gone_from_queue(queue_id)

    def test_no_pipelining_offered_none_used(self):
        """An MX that does not offer PIPELINING (its multi-line EHLO reply
        lacks it): the relay delivers, one command at a time."""
        recipients = ["one@" + NO_PIPELINING.name, "two@" + NO_PIPELINING.name]
        message = make_message(NO_PIPELINING, "no pipelining", recipients=recipients)
        queue_id = self.submit(NO_PIPELINING.sender, recipients, message)
        sent = self.outcome("sent", queue_id)
        self.assertEqual(sent["recipients"], ["<%s>" % r for r in recipients], sent)
        self.assertEqual(sent["verification"], "valid", sent)
        copies = self.wait_for_maildir(NO_PIPELINING, count=2)
        self.assertEqual(len(copies), 2)
        for copy in copies:
            self.assertArrivedIntact(copy, message, NO_PIPELINING_MX, queue_id, sent["tls_version"])
        self.assertNotIn("improper command pipelining", NO_PIPELINING_MX.postfix.log_text(tail=200000))
        self.assertEqual(self.events_for("deferred", queue_id), [], self.relay.log_text())

    def test_twenty_megabytes_of_long_lines(self):
        line = ("0123456789abcdefghijklmnopqrstuvwxyz" * 28)[:996] + "\n"  # 998 octets with CRLF
        lines = []
        size = 0
        number = 0
        while size < BIG_MESSAGE_SIZE:
            # Varied, so that a lost or repeated line cannot go unnoticed.
            text = "%08d " % number + line[9:]
            lines.append(text)
            size += len(text) + 1
            number += 1
        message = make_message(BIG, "twenty megabytes", body="".join(lines))
        self.assertGreater(len(message), BIG_MESSAGE_SIZE)
        queue_id = self.submit(BIG.sender, [BIG.recipient], message)
        sent, data = self.assertDelivered(BIG, queue_id, message)
        self.assertEqual(sent["verification"], "valid", sent)
        log = VALID.postfix.log_lines()
        postfix_id = re.search(r"queued as ([0-9A-Za-z]+)", sent["reply"]).group(1)
        [queued] = [entry for entry in log if "%s: from=<%s>" % (postfix_id, BIG.sender) in entry]
        size = int(re.search(r"size=(\d+)", queued).group(1))
        self.assertGreater(size, BIG_MESSAGE_SIZE, queued)

    def test_8bitmime_body_arrives_unchanged(self):
        body = "Grüße aus Köln, ½ € and ü\nlatin-1 bytes follow\n"
        message = make_message(EIGHT_BIT, "eight bit", body=body,
                               extra_headers="MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n"
                                             "Content-Transfer-Encoding: 8bit\n")
        message += b"\xe9t\xe9 \xff\xfe raw octets\r\n"
        queue_id = self.submit(EIGHT_BIT.sender, [EIGHT_BIT.recipient], message, mail_options=["BODY=8BITMIME"])
        self.assertDelivered(EIGHT_BIT, queue_id, message)

    def test_smtputf8_local_part(self):
        recipient = "jos\u00e9.m\u00fcller@" + UTF8.name
        sender = "\u00e9metteur@client.test"
        body = "Hallo Jos\u00e9\n"
        message = ("From: <%s>\nTo: <%s>\nSubject: =?utf-8?q?gr=C3=BC=C3=9Fe?=\nDate: Fri, 04 Dec 2026 10:00:00 +0000\n"
                   "Message-ID: <utf8@client.test>\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n"
                   "\n" % (sender, recipient)) + body
        message = crlf(message)
        queue_id = self.submit(sender, [recipient], message, mail_options=["SMTPUTF8", "BODY=8BITMIME"])
        # Postfix took it as an SMTPUTF8 transaction (it refuses UTF-8
        # addresses otherwise) and says so in its Received header.
        sent, data = self.assertDelivered(UTF8, queue_id, message, recipients=[recipient], protocol="UTF8SMTPS")
        self.assertIn(("Delivered-To: " + recipient).encode("utf-8"), data)
        self.assertIn(("Return-Path: <%s>" % sender).encode("utf-8"), data)

    def test_fifty_recipients_across_five_domains_in_one_message(self):
        recipients = {domain: ["user%02d@%s" % (n, domain.name) for n in range(10)] for domain in MANY}
        everyone = [address for domain in MANY for address in recipients[domain]]
        # Interleaved: the relay must sort them out by domain itself.
        interleaved = [recipients[domain][n] for n in range(10) for domain in MANY]
        first = MANY[0]
        message = make_message(first, "fifty recipients", recipients=everyone[:3])
        queue_id = self.submit(first.sender, interleaved, message)
        for domain in MANY:
            sent = self.outcome("sent", queue_id, domain=domain)
            self.assertEqual(sorted(sent["recipients"]), sorted("<%s>" % r for r in recipients[domain]), sent)
            self.assertEqual((sent["mx"], sent["ip"]), (domain.mx.name, domain.mx.address), sent)
            copies = self.wait_for_maildir(domain, count=10)
            delivered_to = sorted(re.search(rb"^Delivered-To: (\S+)$", copy, re.M).group(1).decode()
                                  for copy in copies)
            self.assertEqual(delivered_to, sorted(recipients[domain]), "each recipient once in %s" % domain.name)
            self.assertEqual(len(self.delivered_anywhere(domain)), 10)
            for copy in copies:
                self.assertArrivedIntact(copy, message, domain.mx, queue_id, sent["tls_version"] or None)
            if domain.mode == "enforce":
                self.assertEqual(sent["verification"], "valid", sent)
        self.wait_gone_from_queue(queue_id)

    def test_connection_reuse_within_the_per_domain_limit(self):
        """Ten messages to one domain, submitted back to back: Postfix takes
        them over fewer sessions than messages, each session with its own
        STARTTLS and an RSET before every reuse, never more sessions at once
        than delivery.max_connections_per_domain, each message once."""
        submitted = {}
        for number in range(REUSE_MESSAGES):
            message = make_message(REUSE, "reuse %02d" % number)
            submitted[self.submit(REUSE.sender, [REUSE.recipient], message)] = message
        sent = {queue_id: self.outcome("sent", queue_id, domain=REUSE) for queue_id in submitted}
        # A reused connection keeps the validated TLS it was opened with.
        for event in sent.values():
            self.assertEqual((event["mx"], event["ip"]), (REUSE_MX.name, REUSE_MX.address), event)
            self.assertEqual((event["policy_mode"], event["verification"], event["attempts"]),
                             ("enforce", "valid", 1), event)
            self.assertIn(event["tls_version"], TLS_1_2_OR_NEWER, event)
            self.assertTrue(event["reply"].startswith("250"), event)

        copies = self.wait_for_maildir(REUSE, count=REUSE_MESSAGES)
        self.assertEqual(len(copies), REUSE_MESSAGES, "delivered more than once")
        self.assertEqual(len(self.delivered_anywhere(REUSE)), REUSE_MESSAGES)
        by_subject = {}
        for copy in copies:
            by_subject.setdefault(email.message_from_bytes(copy, policy=email.policy.compat32).get("Subject"),
                                  []).append(copy)
        for queue_id, message in submitted.items():
            subject = email.message_from_bytes(message, policy=email.policy.compat32).get("Subject")
            self.assertEqual(len(by_subject.get(subject, [])), 1, "%s: %s" % (subject, sorted(by_subject)))
            self.assertArrivedIntact(by_subject[subject][0], message, REUSE_MX, queue_id,
                                     sent[queue_id]["tls_version"])

        # Postfix's side, once the relay has closed the connections it kept
        # (2 s idle): every message in exactly one session.
        postfix_ids = sorted(re.search(r"queued as ([0-9A-Za-z]+)", event["reply"]).group(1)
                             for event in sent.values())
        postfix = REUSE_MX.postfix

        def all_ended():
            sessions = smtpd_sessions(postfix.log_lines())
            carrying = [session for session in sessions if session.queue_ids]
            taken = sorted(queue_id for session in carrying for queue_id in session.queue_ids)
            if taken == postfix_ids and all(session.end is not None for session in sessions):
                return sessions
            return None

        sessions = wait_until(all_ended, "the relay's sessions with %s ending" % REUSE_MX.name,
                              details=self.details(postfix))
        carrying = [session for session in sessions if session.queue_ids]
        # The other sessions are the probe that waited for Postfix to listen.
        self.assertEqual([session.counts for session in sessions if not session.queue_ids],
                         [{"commands": 0}], postfix.log_text(tail=200000))
        self.assertLess(len(carrying), REUSE_MESSAGES, "one connection per message:\n" + postfix.log_text(tail=200000))
        for session in carrying:
            where = "session of smtpd[%s]:\n%s" % (session.pid, postfix.log_text(tail=200000))
            self.assertEqual(session.failed_commands, [], where)
            messages = len(session.queue_ids)
            self.assertEqual(len(session.tls), 1, where)
            self.assertIn("Anonymous TLS connection established from", session.tls[0], where)
            self.assertEqual({name: session.counts.get(name, 0) for name in ("ehlo", "starttls", "mail", "rcpt",
                                                                               "data", "rset", "quit")},
                             {"ehlo": 2, "starttls": 1, "mail": messages, "rcpt": messages, "data": messages,
                              "rset": messages - 1, "quit": 1}, where)
        self.assertLessEqual(most_at_once(sessions), MAX_CONNECTIONS_PER_DOMAIN, postfix.log_text(tail=200000))
        problems = [line for line in postfix.log_lines()
                    if re.search(r"\b(warning|error|fatal|panic):|\breject:|lost connection|timeout after"
                                 r"|improper command pipelining", line)
                    and not re.search(r"lost connection after CONNECT from", line)]
        self.assertEqual(problems, [], postfix.log_text(tail=200000))
        for queue_id in submitted:
            self.wait_gone_from_queue(queue_id)


def interrupted(signum, frame):
    raise KeyboardInterrupt("signal %d" % signum)


if __name__ == "__main__":
    # Ctrl-C or ctest's timeout (SIGTERM, made a KeyboardInterrupt, which
    # unittest lets through) ends the run without tearDownClass: stop the
    # peers at exit all the same.
    atexit.register(PostfixInterop.cleanup)
    signal.signal(signal.SIGTERM, interrupted)
    relay_harness.main()
