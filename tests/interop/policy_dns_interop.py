"""Interop: a running `stsrelay run` against a real policy host (nginx) and a
real DNS server (unbound), both from Debian's packages, on loopback.

nginx serves the MTA-STS policies over HTTPS in the shapes a sender meets:
enforce, testing and none; a redirect, text/html, a 404 and a policy larger
than sts.max_policy_size (each a failed fetch: the mail goes as without a
policy); and a chunked response (SSI makes nginx stream the policy without
a Content-Length). unbound serves the zone, including a null MX, NXDOMAIN,
a domain without MX records, a domain whose lookups end in SERVFAIL (a
forward zone to a second unbound that refuses it), an MX answer unbound
compresses, and answers too large for UDP (max-udp-size 512: unbound sets
TC and the relay's resolver must retry over TCP). Last, a policy that
changes while the relay runs: the file nginx serves is edited and the TXT
id changed with an unbound reload, and the relay follows. And an enforce
failure until queue.max_age, on a second relay whose max_age is a few
seconds: the policy is fetched again before the mail bounces (RFC 8461
§5.1), seen in a per-domain nginx access log; the DSN reaches the sender's
MX, or, where the policy has become mode none meanwhile (same id), the
mail is delivered instead.

The MX hosts are aiosmtpd (python3-aiosmtpd) with recording_handler.py.
Each scenario has its own recipient domain; each asserts what the MX hosts
received, `queue list --json`, the relay's log lines and, for the policy
variants, `stsrelay sts-check --json` against the same peers. Every wait is
on an event with a timeout; nothing asserts on timings.

Run: /usr/bin/python3 -B policy_dns_interop.py --stsrelay PATH [unittest args]
"""

import base64
import email
import email.policy
import json
import os
import re
import shutil
import signal
import smtplib
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "integration", "system"))

import relay_harness  # noqa: E402
from peers import (WAIT_TIMEOUT, Peers, TestCa, dns_query, free_port_on_all, https_get,  # noqa: E402
                   policy_site, relay_overrides, require_programs, site_root, start_unbound_server, subject_of,
                   wait_until)
from relay_harness import Relay, bare_address, queue_id_from_reply  # noqa: E402

COMMAND_TIMEOUT = 60

POLICY_ADDRESS = "127.0.0.70"  # nginx: every mta-sts.* host
DNS_ADDRESS = "127.0.0.71"  # unbound: the zone
REFUSING_DNS_ADDRESS = "127.0.0.72"  # unbound: refuses servfail.test, so the first answers SERVFAIL

MAX_POLICY_SIZE = 65536  # the relay's default sts.max_policy_size (SPEC)
TLS_1_2_OR_NEWER = ("TLSv1.2", "TLSv1.3")


class Mx:
    def __init__(self, key, address, ca, extra_names=()):
        self.key = key
        self.name = key + ".mx.test"
        self.address = address
        self.ca = ca  # "test-ca" or "other-ca"
        self.cert_names = [self.name, *extra_names]


COMPRESSED = "names-this-long-are-what-makes-compression-pay.test"
TCP = "tcp.test"
IMPLICIT = "implicit.test"

# GOOD also answers for the implicit MX and the first MX of the compressed
# and TCP domains, with a valid certificate for each name.
GOOD = Mx("good", "127.0.0.73", "test-ca", extra_names=[IMPLICIT, "mx1." + COMPRESSED, "mx01." + TCP])
UNTRUSTED = Mx("untrusted", "127.0.0.74", "other-ca")
MX_A = Mx("mx-a", "127.0.0.75", "test-ca")
MX_B = Mx("mx-b", "127.0.0.76", "test-ca")
V6 = Mx("v6", "::1", "test-ca")  # only an AAAA record: reached over IPv6
MX_HOSTS = [GOOD, UNTRUSTED, MX_A, MX_B, V6]


def policy_text(mode, mx=(), max_age=86400):
    return "version: STSv1\nmode: %s\n" % mode + "".join("mx: %s\n" % name for name in mx) + "max_age: %d\n" % max_age


class PolicyDomain:
    """A recipient domain with an _mta-sts record and what nginx serves for it.
    LOCATION: nginx directives for the policy URL (None: serve TEXT as a file)."""

    def __init__(self, name, mx, text, location=None):
        self.name = name
        self.mx = mx
        self.text = text
        self.location = location
        self.id = re.sub(r"[^a-z0-9]", "", name.split(".")[0]) + "2024"
        self.sender = name.split(".")[0] + "@client.test"
        self.recipient = "rcpt@" + name


ENFORCE = PolicyDomain("enforce.test", GOOD, policy_text("enforce", [GOOD.name]))
TESTING = PolicyDomain("testing.test", UNTRUSTED, policy_text("testing", [UNTRUSTED.name]))
NONE = PolicyDomain("none.test", UNTRUSTED, policy_text("none"))
# The failed fetches: each domain's MX has an untrusted certificate and the
# policy (where there is one to read) says enforce, so a relay that wrongly
# took the policy would hold the mail back instead of delivering it.
REDIRECT = PolicyDomain("redirect.test", UNTRUSTED, None,
                        location="return 301 https://mta-sts.%s:$server_port/.well-known/mta-sts.txt;" % ENFORCE.name)
HTML = PolicyDomain("html.test", UNTRUSTED, policy_text("enforce", [UNTRUSTED.name]),
                    location="types { } default_type text/html;")
MISSING = PolicyDomain("missing.test", UNTRUSTED, None, location="return 404;")
OVERSIZED = PolicyDomain("oversized.test", UNTRUSTED,
                         policy_text("enforce", [UNTRUSTED.name])
                         + "".join("x-padding-%05d: %s\n" % (n, "p" * 100) for n in range(600)))
# SSI has nginx stream the file without a Content-Length, so HTTP/1.1 gets
# it chunked, one chunk per 1 KiB buffer read from the file: several KiB of
# unknown keys (ignored, §3.2), then the mx value echoed from a variable.
CHUNKED = PolicyDomain("chunked.test", GOOD,
                       "version: STSv1\nmode: enforce\n"
                       + "".join("x-padding-%03d: %s\n" % (n, "c" * 100) for n in range(80))
                       + 'mx: <!--# echo var="sts_mx" -->\nmax_age: 86400\n',
                       location='ssi on; ssi_types text/plain; output_buffers 1 1k; set $sts_mx "%s";' % GOOD.name)
IMPLICIT_MX = PolicyDomain(IMPLICIT, None, policy_text("enforce", [IMPLICIT]))
IPV6 = PolicyDomain("ipv6.test", V6, policy_text("enforce", [V6.name]))
TCP_FALLBACK = PolicyDomain(TCP, None, policy_text("enforce", ["*." + TCP]))
MOVING = PolicyDomain("moving.test", None, policy_text("enforce", [MX_A.name]))  # its records: zone_records()
# Enforce, and the only MX's certificate is from another CA: held back until
# queue.max_age. Each has an access log of its own, where nginx's lines show
# how often the relay fetched its policy (a path relative to nginx's prefix,
# the temporary directory).
UNTIL_MAX_AGE = PolicyDomain("until-max-age.test", UNTRUSTED, policy_text("enforce", [UNTRUSTED.name]),
                             location="access_log until-max-age.access.log;")
# The same, but its policy becomes mode none (same id) while the mail waits.
WITHDRAWN = PolicyDomain("withdrawn.test", UNTRUSTED, policy_text("enforce", [UNTRUSTED.name]),
                         location="access_log withdrawn.access.log;")
POLICY_DOMAINS = [ENFORCE, TESTING, NONE, REDIRECT, HTML, MISSING, OVERSIZED, CHUNKED, IMPLICIT_MX, TCP_FALLBACK,
                  MOVING, IPV6, UNTIL_MAX_AGE, WITHDRAWN]

NULL_MX = "nullmx.test"
NXDOMAIN = "nosuch.test"  # no record at all under the static zone
SERVFAIL = "servfail.test"
SENDERS = "senders.test"  # the bounces' envelope senders live here; MX GOOD
TCP_MX_COUNT = 30  # an MX answer over 512 bytes even compressed
# queue.max_age of the second relay, which only the max_age scenarios use:
# long enough for the first attempt to end well before it.
SHORT_MAX_AGE = "5s"


def zone_records(moving_mx, moving_id):
    """The whole zone; the moving domain's MX hosts and TXT id as given."""
    records = ["%s. 300 IN %s %s" % (host.name, "AAAA" if ":" in host.address else "A", host.address)
               for host in MX_HOSTS]
    for domain in POLICY_DOMAINS:
        records.append("mta-sts.%s. 300 IN A %s" % (domain.name, POLICY_ADDRESS))
        if domain is MOVING:
            continue
        records.append('_mta-sts.%s. 300 IN TXT "v=STSv1; id=%s"' % (domain.name, domain.id))
        if domain.mx is not None:
            records.append("%s. 300 IN MX 10 %s." % (domain.name, domain.mx.name))
    records += ["%s. 300 IN MX %d %s." % (MOVING.name, 10 * n, host.name) for n, host in enumerate(moving_mx, 1)]
    records.append('_mta-sts.%s. 300 IN TXT "v=STSv1; id=%s"' % (MOVING.name, moving_id))
    # No MX: the domain's own address is the implicit MX (RFC 5321 §5.1).
    records.append("%s. 300 IN A %s" % (IMPLICIT, GOOD.address))
    # Long names sharing a suffix: unbound points back at it (RFC 1035 §4.1.4).
    for n in range(1, 5):
        records.append("%s. 300 IN MX %d mx%d.%s." % (COMPRESSED, 10 * n, n, COMPRESSED))
        records.append("mx%d.%s. 300 IN A %s" % (n, COMPRESSED, GOOD.address))
    # Answers larger than unbound's max-udp-size: TC over UDP, whole over TCP.
    for n in range(1, TCP_MX_COUNT + 1):
        records.append("%s. 300 IN MX %d mx%02d.%s." % (TCP, 10 * n, n, TCP))
        records.append("mx%02d.%s. 300 IN A %s" % (n, TCP, GOOD.address))
    for filler in ("a", "b"):
        records.append('_mta-sts.%s. 300 IN TXT "not-sts-%s-%s"' % (TCP, filler, filler * 240))
    records.append("%s. 300 IN MX 0 ." % NULL_MX)  # RFC 7505
    records.append("%s. 300 IN MX 10 %s." % (SENDERS, GOOD.name))
    return records


# The main unbound: the zone above, UDP answers capped at 512 bytes, and
# servfail.test forwarded to a server that refuses it.
UNBOUND_MORE = """\
server:
  max-udp-size: 512
  do-not-query-localhost: no
  local-zone: "{servfail}." transparent
forward-zone:
  name: "{servfail}."
  forward-addr: {refusing}@{refusing_port}
"""
REFUSING_MORE = 'server:\n  local-zone: "%s." always_refuse\n' % SERVFAIL



def replace_file(path, text):
    """Writes PATH whole or not at all, as an operator's deploy would."""
    temporary = path + ".new"
    with open(temporary, "w") as out:
        out.write(text)
    os.rename(temporary, path)



class PolicyDnsInterop(unittest.TestCase):
    directory = None
    peers = None
    relay = None
    short_relay = None  # queue.max_age SHORT_MAX_AGE

    @classmethod
    def setUpClass(cls):
        require_programs("unbound", "unbound-control", "nginx", "openssl")
        cls.directory = tempfile.mkdtemp(prefix="stsrelay-policy-dns-")
        os.chmod(cls.directory, 0o755)  # nginx workers read the policies
        cls.peers = Peers(cls.directory)
        try:
            cls.start_peers()
            cls.relay = cls.new_relay()
            cls.relay.start()
            cls.short_relay = cls.new_relay(max_age=SHORT_MAX_AGE)
            cls.short_relay.start()
        except BaseException:
            cls.cleanup()
            raise

    @classmethod
    def new_relay(cls, **queue):
        relay = Relay()
        relay.overrides = relay_overrides(cls.mx_port, cls.ca_file, "%s:%d" % (DNS_ADDRESS, cls.unbound.port),
                                          cls.policy_port, queue=queue)
        return relay

    @classmethod
    def start_peers(cls):
        directory = cls.directory
        ca = TestCa(os.path.join(directory, "ca"))
        other_ca = TestCa(os.path.join(directory, "other-ca"), name="some other CA")
        cls.ca_file = ca.cert

        refusing = start_unbound_server(cls.peers, "unbound-refusing", REFUSING_DNS_ADDRESS, [], REFUSING_MORE)
        more = UNBOUND_MORE.format(servfail=SERVFAIL, refusing=REFUSING_DNS_ADDRESS, refusing_port=refusing.port)
        cls.unbound = start_unbound_server(cls.peers, "unbound", DNS_ADDRESS, zone_records([MX_A], "move1"), more)

        policy_cert, policy_key = ca.issue("mta-sts", ["mta-sts." + domain.name for domain in POLICY_DOMAINS])
        sites = [policy_site(directory, domain.name, domain.text,
                             None if domain.location is None
                             else "root %s; %s" % (site_root(directory, domain.name), domain.location))
                 for domain in POLICY_DOMAINS]
        cls.policy_port = cls.peers.start_nginx(POLICY_ADDRESS, policy_cert, policy_key, sites)

        cls.mx_port = free_port_on_all([host.address for host in MX_HOSTS])
        for host in MX_HOSTS:
            cert, key = (ca if host.ca == "test-ca" else other_ca).issue(host.key, host.cert_names)
            cls.peers.start_aiosmtpd(host.key, host.address, cls.mx_port, cert, key,
                                     handler="recording_handler.Recorder",
                                     handler_args=[cls.mx_directory(host), "--name", host.name], pythonpath=HERE)

    @classmethod
    def mx_directory(cls, host):
        return os.path.join(cls.directory, "mx", host.key)

    @classmethod
    def cleanup(cls):
        """Stops everything and removes the temp dir; safe to call again."""
        relays = [relay for relay in (cls.relay, cls.short_relay) if relay is not None]
        peers, directory = cls.peers, cls.directory
        cls.relay = cls.short_relay = cls.peers = cls.directory = None
        try:
            for relay in relays:
                try:
                    relay.close()
                except Exception as error:  # close the other all the same
                    sys.stderr.write("closing a relay: %s\n" % error)
        finally:
            try:
                if peers is not None:
                    peers.stop()
            finally:
                if directory is not None:
                    shutil.rmtree(directory, ignore_errors=True)

    @classmethod
    def tearDownClass(cls):
        if cls.relay is None:
            return
        try:
            for relay in (cls.relay, cls.short_relay):
                if relay is not None:
                    relay.stop_and_check()
        finally:
            cls.cleanup()

    # -- the MX hosts ------------------------------------------------------

    def received(self, host, domain):
        """The messages HOST recorded for recipients at DOMAIN."""
        messages = []
        directory = self.mx_directory(host)
        for name in sorted(os.listdir(directory)):
            if not name.endswith(".json"):
                continue
            with open(os.path.join(directory, name)) as record:
                message = json.load(record)
            message["data"] = base64.b64decode(message["data"])
            if any(rcpt.lower().endswith("@" + domain) for rcpt in message["rcpt_tos"]):
                messages.append(message)
        return messages

    def received_anywhere(self, domain):
        return [message for host in MX_HOSTS for message in self.received(host, domain)]

    # -- the relay ---------------------------------------------------------

    def submit(self, sender, recipient, subject, relay=None):
        """Hands one message to the relay (or RELAY) over SMTP; returns its queue id."""
        relay = relay or self.relay
        client = smtplib.SMTP(relay.host, relay.port, timeout=30, local_hostname="client.test")
        try:
            client.ehlo()
            self.assertEqual(client.mail(sender)[0], 250)
            self.assertEqual(client.rcpt(recipient)[0], 250)
            message = ("From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\n\r\nbody of %s\r\n"
                       % (sender, recipient, subject, subject))
            code, reply = client.data(message.encode())
            self.assertEqual(code, 250, reply)
            client.quit()
        finally:
            client.close()
        queue_id = queue_id_from_reply(reply)
        self.assertIsNotNone(queue_id, reply)
        return queue_id

    def outcome(self, status, queue_id, min_attempts=1, relay=None):
        return (relay or self.relay).wait_for_event(status, timeout=WAIT_TIMEOUT,
                                                    predicate=lambda e: e.get("queue_id") == queue_id
                                                    and e.get("attempts", 0) >= min_attempts)

    def events_for(self, name, queue_id=None, domain=None, relay=None):
        return [event for event in (relay or self.relay).events_named(name)
                if (queue_id is None or event.get("queue_id") == queue_id)
                and (domain is None or event.get("domain") == domain)]

    def sts_check(self, domain, *flags):
        result = self.relay.cli("sts-check", domain, "--json", *flags)
        output = result.stdout.decode(errors="replace") + result.stderr.decode(errors="replace")
        try:
            report = json.loads(result.stdout)
        except ValueError:
            self.fail("sts-check %s printed no JSON (exit %d):\n%s" % (domain, result.returncode, output))
        self.assertEqual(report["domain"], domain, output)
        self.assertEqual(result.returncode, 0 if report["valid"] else 1, output)
        return report, output

    def deliver(self, domain, host, subject, sender=None, recipient=None):
        """Submits one message for DOMAIN and checks that HOST alone got it,
        once, and that the queue forgot it; returns the `sent` line and
        what HOST recorded."""
        sender = sender or domain.sender
        recipient = recipient or domain.recipient
        queue_id = self.submit(sender, recipient, subject)
        sent = self.outcome("sent", queue_id)
        self.assertEqual(sent["recipients"], ["<%s>" % recipient], sent)
        self.assertEqual(sent["ip"], host.address, sent)
        self.assertTrue(sent["reply"].startswith("250"), sent)
        messages = [m for m in self.received(host, domain.name) if subject_of(m["data"]) == subject]
        self.assertEqual(len(messages), 1, messages)
        message = messages[0]
        self.assertEqual(message["mail_from"], sender)
        self.assertEqual(message["rcpt_tos"], [recipient])
        self.assertTrue(message["data"].startswith(b"Received: from "), message["data"][:200])
        self.assertIn(b"body of " + subject.encode(), message["data"])
        copies = [m for m in self.received_anywhere(domain.name) if subject_of(m["data"]) == subject]
        self.assertEqual(len(copies), 1, "delivered more than once")
        self.assertTrue(message["tls"], message)
        self.assertIn(message["tls_version"], TLS_1_2_OR_NEWER, message)
        self.assertEqual(sent["tls_version"], message["tls_version"], sent)
        self.assertIsNone(self.relay.queue_entry(queue_id), "a sent message stays in the queue")
        sent["queue_id"] = queue_id
        return sent, message

    # -- policy variants: enforce, testing, none ----------------------------

    def test_policy_enforce_delivers_over_validated_tls(self):
        sent, _ = self.deliver(ENFORCE, GOOD, "enforce")
        self.assertEqual(sent["mx"], GOOD.name, sent)
        self.assertEqual((sent["policy_mode"], sent["policy_id"], sent["verification"]),
                         ("enforce", ENFORCE.id, "valid"), sent)
        self.assertEqual(self.events_for("sts_discovery", domain=ENFORCE.name), [])
        report, output = self.sts_check(ENFORCE.name)
        self.assertTrue(report["valid"], output)
        self.assertEqual(report["txt"], {"found": True, "id": ENFORCE.id, "error": None})
        self.assertEqual((report["policy"]["mode"], report["policy"]["mx"]), ("enforce", [GOOD.name]), output)
        [host] = report["mx_hosts"]
        self.assertEqual((host["name"], host["matches_policy"], host["certificate_valid"]), (GOOD.name, True, True))

    def test_policy_testing_delivers_despite_a_bad_certificate_with_a_warning(self):
        sent, _ = self.deliver(TESTING, UNTRUSTED, "testing")
        self.assertEqual((sent["policy_mode"], sent["policy_id"], sent["verification"]),
                         ("testing", TESTING.id, "certificate-not-trusted"), sent)
        [warning] = self.events_for("sts_testing_failure", sent["queue_id"])
        self.assertEqual(warning["level"], "warn", warning)
        self.assertEqual((warning["mx"], warning["result_type"]), (UNTRUSTED.name, "certificate-not-trusted"))
        report, output = self.sts_check(TESTING.name)
        self.assertFalse(report["valid"], output)
        self.assertEqual(report["policy"]["mode"], "testing", output)
        [host] = report["mx_hosts"]
        self.assertIs(host["certificate_valid"], False, output)
        self.assertIs(host["starttls"], True, output)

    def test_policy_none_is_opportunistic(self):
        sent, _ = self.deliver(NONE, UNTRUSTED, "none")
        self.assertEqual((sent["policy_mode"], sent["policy_id"], sent["verification"]),
                         ("none", NONE.id, "certificate-not-trusted"), sent)
        self.assertEqual(self.events_for("sts_testing_failure", sent["queue_id"]), [])
        report, output = self.sts_check(NONE.name)
        self.assertTrue(report["policy"]["fetched"], output)
        self.assertEqual((report["policy"]["mode"], report["policy"]["mx"]), ("none", []), output)

    # -- policy fetches that fail: the mail goes as without a policy --------

    def assertFetchFailsAndMailGoesWithoutPolicy(self, domain, detail):
        """DETAIL: the words that name the broken rule, in the relay's log
        and in sts-check's policy error."""
        sent, _ = self.deliver(domain, UNTRUSTED, domain.name)
        # Opportunistic: the untrusted certificate does not hold the mail back.
        self.assertEqual((sent["policy_mode"], sent["policy_id"], sent["verification"]),
                         ("none", "", "certificate-not-trusted"), sent)
        self.assertEqual(self.events_for("sts_testing_failure", sent["queue_id"]), [])
        [discovery] = self.events_for("sts_discovery", domain=domain.name)
        self.assertEqual(discovery["result_type"], "sts-policy-fetch-error", discovery)
        self.assertIn(detail, discovery["detail"], discovery)
        self.assertIs(discovery["cached_policy"], False, discovery)
        report, output = self.sts_check(domain.name)
        self.assertFalse(report["valid"], output)
        self.assertEqual(report["txt"]["id"], domain.id, output)
        self.assertFalse(report["policy"]["fetched"], output)
        self.assertIn(detail, report["policy"]["error"] or "", output)
        return discovery

    def test_policy_redirect_is_not_followed(self):
        # RFC 8461 §3.3: "HTTP 3xx redirects MUST NOT be followed".
        discovery = self.assertFetchFailsAndMailGoesWithoutPolicy(REDIRECT, "redirect")
        self.assertIn("301", discovery["detail"], discovery)
        self.assertIn("mta-sts." + ENFORCE.name, discovery["detail"], discovery)
        self.assertIn("RFC 8461", discovery["detail"], discovery)

    def test_policy_served_as_html_is_refused(self):
        self.assertFetchFailsAndMailGoesWithoutPolicy(HTML, "Content-Type text/html")

    def test_policy_404_is_no_policy(self):
        self.assertFetchFailsAndMailGoesWithoutPolicy(MISSING, "HTTP 404")

    def test_policy_larger_than_the_limit_is_refused(self):
        self.assertGreater(len(OVERSIZED.text), MAX_POLICY_SIZE)
        self.assertFetchFailsAndMailGoesWithoutPolicy(OVERSIZED, "larger than %d bytes" % MAX_POLICY_SIZE)

    # -- a chunked policy --------------------------------------------------

    def test_policy_sent_chunked_is_parsed(self):
        host = "mta-sts." + CHUNKED.name
        raw = https_get(POLICY_ADDRESS, self.policy_port, host, "/.well-known/mta-sts.txt", self.ca_file)
        head, _, body = raw.partition(b"\r\n\r\n")
        headers = head.decode("latin-1").lower()
        self.assertIn("\r\ntransfer-encoding: chunked", headers, head)
        self.assertNotIn("\r\ncontent-length:", headers, head)
        self.assertIn("\r\ncontent-type: text/plain", headers, head)
        sizes = []
        while True:
            line, _, body = body.partition(b"\r\n")
            size = int(line.split(b";")[0], 16)
            sizes.append(size)
            if size == 0:
                break
            body = body[size + 2:]
        self.assertGreaterEqual(len(sizes), 5, "nginx sent the policy in few chunks: %s" % sizes)
        self.assertGreater(sum(sizes), 4096, sizes)  # more than one of the relay's reads

        sent, _ = self.deliver(CHUNKED, GOOD, "chunked")
        self.assertEqual((sent["policy_mode"], sent["policy_id"], sent["verification"]),
                         ("enforce", CHUNKED.id, "valid"), sent)
        self.assertEqual(self.events_for("sts_discovery", domain=CHUNKED.name), [])
        report, output = self.sts_check(CHUNKED.name)
        self.assertTrue(report["valid"], output)
        # The mx (a chunk of its own) and max_age (after it) were read.
        self.assertEqual((report["policy"]["mode"], report["policy"]["mx"], report["policy"]["max_age"]),
                         ("enforce", [GOOD.name], 86400), output)

    # -- DNS: null MX, NXDOMAIN, SERVFAIL, no MX ---------------------------

    def assertBouncedWithDsn(self, domain, enhanced_code, subject):
        sender = subject.replace(" ", "-") + "@" + SENDERS
        recipient = "rcpt@" + domain
        queue_id = self.submit(sender, recipient, subject)
        bounced = self.outcome("bounced", queue_id)
        self.assertEqual(bounced["attempts"], 1, "bounced at the first attempt: %s" % bounced)
        self.assertEqual(bounced["recipients"], ["<%s>" % recipient], bounced)
        self.assertEqual(self.events_for("sent", queue_id), [])
        self.assertEqual(self.events_for("deferred", queue_id), [])
        self.assertIsNone(self.relay.queue_entry(queue_id), "a bounced message stays in the queue")
        self.assertEqual(self.received_anywhere(domain), [])

        notice = self.relay.wait_for_event("bounce_queued", predicate=lambda e: e.get("original_id") == queue_id)
        self.assertEqual(bare_address(notice["recipient"]), sender, notice)
        self.outcome("sent", notice["queue_id"])
        [dsn] = [m for m in self.received(GOOD, SENDERS) if m["rcpt_tos"] == [sender]]
        self.assertEqual(dsn["mail_from"], "<>")
        report = email.message_from_bytes(dsn["data"], policy=email.policy.compat32)
        self.assertEqual(report.get_content_type(), "multipart/report")
        text = dsn["data"].decode("utf-8", "replace")
        self.assertRegex(text, r"Final-Recipient: rfc822; ?" + re.escape(recipient))
        self.assertIn("Action: failed", text)
        self.assertIn("Status: " + enhanced_code, text)
        self.assertIn("Subject: " + subject, text)
        self.assertIsNone(self.relay.queue_entry(notice["queue_id"]))
        return bounced

    def test_null_mx_bounces_at_once(self):
        answer = dns_query(DNS_ADDRESS, self.unbound.port, NULL_MX, "MX")
        self.assertEqual([text for _, text, _ in answer.records], ["0 ."])
        bounced = self.assertBouncedWithDsn(NULL_MX, "5.1.10", "null mx")
        self.assertIn("null MX", bounced["reply"], bounced)

    def test_nxdomain_bounces(self):
        self.assertEqual(dns_query(DNS_ADDRESS, self.unbound.port, NXDOMAIN, "MX").rcode, 3)
        bounced = self.assertBouncedWithDsn(NXDOMAIN, "5.1.2", "nxdomain")
        self.assertIn("does not exist", bounced["reply"], bounced)

    def test_servfail_defers_never_bounces(self):
        self.assertEqual(dns_query(DNS_ADDRESS, self.unbound.port, SERVFAIL, "MX").rcode, 2)
        sender = "servfail@" + SENDERS
        recipient = "rcpt@" + SERVFAIL
        queue_id = self.submit(sender, recipient, "servfail")
        first = self.outcome("deferred", queue_id)
        again = self.outcome("deferred", queue_id, min_attempts=first["attempts"] + 1)
        for event in (first, again):
            self.assertEqual(event["reply"], "4.4.3 MX lookup for %s failed: server_failure" % SERVFAIL, event)
        self.assertEqual(self.events_for("bounced", queue_id), [])
        self.assertEqual(self.events_for("bounce_queued", queue_id), [])
        self.assertEqual([e for e in self.relay.events_named("bounce_queued") if e.get("original_id") == queue_id],
                         [])
        entry = self.relay.queue_entry(queue_id)
        self.assertIsNotNone(entry, "%s left the queue" % queue_id)
        [state] = entry["recipients"]
        self.assertEqual((bare_address(state["address"]), state["status"]), (recipient, "deferred"), entry)
        self.assertGreaterEqual(state["attempts"], 2, entry)
        self.assertEqual(state["last_error"], first["reply"], entry)
        self.assertEqual(self.received_anywhere(SERVFAIL), [])
        # Done with it: the retries every second would only add noise.
        deleted = self.relay.cli("queue", "delete", queue_id)
        self.assertEqual(deleted.returncode, 0, deleted.stderr)
        self.assertIsNone(self.relay.queue_entry(queue_id))

    def test_mx_with_only_an_ipv6_address(self):
        answer = dns_query(DNS_ADDRESS, self.unbound.port, V6.name, "A")
        self.assertEqual((answer.rcode, answer.records), (0, []))
        sent, message = self.deliver(IPV6, V6, "ipv6 mx")
        self.assertEqual(sent["mx"], V6.name, sent)
        self.assertEqual((sent["policy_mode"], sent["policy_id"], sent["verification"]),
                         ("enforce", IPV6.id, "valid"), sent)

    def test_no_mx_records_means_the_domain_itself(self):
        answer = dns_query(DNS_ADDRESS, self.unbound.port, IMPLICIT, "MX")
        self.assertEqual((answer.rcode, answer.records), (0, []))
        # Under enforce, the policy must list the domain name itself (§4.1).
        sent, _ = self.deliver(IMPLICIT_MX, GOOD, "implicit mx")
        self.assertEqual(sent["mx"], IMPLICIT, sent)
        self.assertEqual((sent["policy_mode"], sent["policy_id"], sent["verification"]),
                         ("enforce", IMPLICIT_MX.id, "valid"), sent)
        report, output = self.sts_check(IMPLICIT)
        self.assertTrue(report["valid"], output)
        self.assertEqual([host["name"] for host in report["mx_hosts"]], [IMPLICIT], output)

    # -- DNS: what unbound does to the wire format -------------------------

    def test_compressed_mx_answer(self):
        answer = dns_query(DNS_ADDRESS, self.unbound.port, COMPRESSED, "MX")
        self.assertFalse(answer.truncated)
        # In any order: unbound rotates the records of an RRset.
        self.assertEqual(sorted(text for _, text, _ in answer.records),
                         ["%d mx%d.%s." % (10 * n, n, COMPRESSED) for n in range(1, 5)])
        self.assertTrue(all(compressed for _, _, compressed in answer.records),
                        "unbound did not compress the MX names: nothing is tested")
        sent, _ = self.deliver(PolicyDomain(COMPRESSED, None, None), GOOD, "compressed")
        self.assertEqual(sent["mx"], "mx1." + COMPRESSED, sent)
        self.assertEqual((sent["policy_mode"], sent["verification"]), ("none", "valid"), sent)

    def test_answers_too_large_for_udp_are_fetched_over_tcp(self):
        for rtype, count in (("MX", TCP_MX_COUNT), ("TXT", 3)):
            name = TCP if rtype == "MX" else "_mta-sts." + TCP
            # As the relay's resolver asks (EDNS0, 1232 bytes): unbound caps at 512.
            over_udp = dns_query(DNS_ADDRESS, self.unbound.port, name, rtype)
            self.assertTrue(over_udp.truncated, "%s %s fits in UDP: nothing is tested" % (name, rtype))
            over_tcp = dns_query(DNS_ADDRESS, self.unbound.port, name, rtype, tcp=True)
            self.assertFalse(over_tcp.truncated)
            self.assertEqual(len(over_tcp.records), count, over_tcp.records)
            self.assertGreater(len(over_tcp.raw), 512)
        # The policy id comes from the TXT answer, the host from the MX
        # answer: both only over TCP.
        sent, _ = self.deliver(TCP_FALLBACK, GOOD, "tcp fallback")
        self.assertEqual(sent["mx"], "mx01." + TCP, sent)
        self.assertEqual((sent["policy_mode"], sent["policy_id"], sent["verification"]),
                         ("enforce", TCP_FALLBACK.id, "valid"), sent)
        # Only mx01's certificate names its host: the policy, not TLS, is checked.
        report, output = self.sts_check(TCP, "--no-connect")
        self.assertTrue(report["valid"], output)
        self.assertEqual(report["txt"]["id"], TCP_FALLBACK.id, output)
        self.assertEqual([host["name"] for host in report["mx_hosts"]],
                         ["mx%02d.%s" % (n, TCP) for n in range(1, TCP_MX_COUNT + 1)], output)

    # -- the policy changes while the relay runs ---------------------------

    def change_zone(self, moving_mx, moving_id):
        self.unbound.reload(zone_records(moving_mx, moving_id))
        wait_until(lambda: ("TXT", "v=STSv1; id=" + moving_id, False) in
                   dns_query(DNS_ADDRESS, self.unbound.port, "_mta-sts." + MOVING.name, "TXT").records,
                   "unbound serving the new _mta-sts id")

    def test_policy_change_is_followed(self):
        policy_file = os.path.join(site_root(self.directory, MOVING.name), ".well-known", "mta-sts.txt")
        try:
            # 1. enforce, listing mx-a only; mx-a is the MX.
            sent, _ = self.deliver(MOVING, MX_A, "moving 1")
            self.assertEqual((sent["mx"], sent["policy_mode"], sent["policy_id"]), (MX_A.name, "enforce", "move1"))
            report, output = self.sts_check(MOVING.name)
            self.assertTrue(report["valid"], output)

            # 2. The file now lists mx-b only, but the TXT id is the same: the
            # cached policy stands (RFC 8461 §3.3: fetched when the id changes).
            replace_file(policy_file, policy_text("enforce", [MX_B.name]))
            sent, _ = self.deliver(MOVING, MX_A, "moving 2")
            self.assertEqual((sent["mx"], sent["policy_id"]), (MX_A.name, "move1"), sent)
            report, output = self.sts_check(MOVING.name)  # fetches afresh: mx-a is not listed
            self.assertFalse(report["valid"], output)
            self.assertEqual(report["policy"]["mx"], [MX_B.name], output)

            # 3. mx-b is the MX and the id changes: the relay fetches the new policy.
            self.change_zone([MX_B], "move2")
            sent, _ = self.deliver(MOVING, MX_B, "moving 3")
            self.assertEqual((sent["mx"], sent["policy_mode"], sent["policy_id"], sent["verification"]),
                             (MX_B.name, "enforce", "move2", "valid"), sent)
            report, output = self.sts_check(MOVING.name)
            self.assertTrue(report["valid"], output)
            self.assertEqual(report["txt"]["id"], "move2", output)

            # 4. Back to mx-a, which the new policy (mode testing) does not
            # list: tried with a warning, delivered.
            replace_file(policy_file, policy_text("testing", [MX_B.name]))
            self.change_zone([MX_A], "move3")
            sent, _ = self.deliver(MOVING, MX_A, "moving 4")
            self.assertEqual((sent["mx"], sent["policy_mode"], sent["policy_id"]), (MX_A.name, "testing", "move3"))
            [not_listed] = self.events_for("sts_mx_not_listed", sent["queue_id"])
            self.assertEqual((not_listed["mx"], not_listed["action"]), (MX_A.name, "tried"), not_listed)
            self.assertEqual([subject_of(m["data"]) for m in self.received(MX_B, MOVING.name)], ["moving 3"])
            self.assertEqual([subject_of(m["data"]) for m in self.received(MX_A, MOVING.name)],
                             ["moving 1", "moving 2", "moving 4"])
            self.assertEqual(self.events_for("sts_discovery", domain=MOVING.name), [])
        finally:
            # Later scenarios see the zone as it started.
            replace_file(policy_file, MOVING.text)
            self.unbound.reload(zone_records([MX_A], "move1"))

    # -- an enforce failure until queue.max_age (RFC 8461 §5.1) ------------

    def policy_fetches(self, domain):
        """The requests for DOMAIN's policy in its own nginx access log."""
        try:
            with open(os.path.join(self.directory, domain.name.split(".")[0] + ".access.log")) as log:
                lines = log.read().splitlines()
        except FileNotFoundError:
            return []
        return [line for line in lines if '"GET /.well-known/mta-sts.txt HTTP/1.1" 200 ' in line]

    def assertHeldBackUntilMaxAge(self, domain, subject):
        """Submits one message for DOMAIN to the short-lived relay and waits
        for its first attempt, deferred by the enforced policy; returns (queue
        id, sender, that `deferred` line)."""
        sender = subject.replace(" ", "-") + "@" + SENDERS
        queue_id = self.submit(sender, domain.recipient, subject, relay=self.short_relay)
        deferred = self.outcome("deferred", queue_id, relay=self.short_relay)
        self.assertEqual((deferred["policy_mode"], deferred["policy_id"], deferred["verification"]),
                         ("enforce", domain.id, "certificate-not-trusted"), deferred)
        self.assertEqual((deferred["mx"], deferred["ip"]), (UNTRUSTED.name, UNTRUSTED.address), deferred)
        self.assertIn("MTA-STS", deferred["reply"], deferred)
        self.assertEqual(len(self.policy_fetches(domain)), 1, "the first attempt fetched the policy")
        return queue_id, sender, deferred

    def assertRediscoveredOnce(self, domain, queue_id):
        [rediscovery] = self.events_for("sts_rediscovery", queue_id, relay=self.short_relay)
        self.assertEqual((rediscovery["domain"], rediscovery["policy_id"]), (domain.name, domain.id), rediscovery)
        # The reason: the failure that would have bounced the mail.
        self.assertRegex(rediscovery["reason"], r"^4\.7\.5 certificate for %s " % re.escape(UNTRUSTED.name),
                         rediscovery)
        # The re-discovery fetched the policy again, although its id is the
        # one cached (nginx logs a request once it has answered it).
        wait_until(lambda: len(self.policy_fetches(domain)) >= 2, "a second fetch of %s's policy" % domain.name,
                   details=self.short_relay.log_text)
        self.assertEqual(len(self.policy_fetches(domain)), 2, self.policy_fetches(domain))
        return rediscovery

    def test_enforce_failure_until_max_age_bounces_after_rediscovery(self):
        queue_id, sender, _ = self.assertHeldBackUntilMaxAge(UNTIL_MAX_AGE, "until max age")
        bounced = self.outcome("bounced", queue_id, relay=self.short_relay)
        self.assertEqual(bounced["recipients"], ["<%s>" % UNTIL_MAX_AGE.recipient], bounced)
        self.assertEqual((bounced["policy_mode"], bounced["policy_id"], bounced["verification"]),
                         ("enforce", UNTIL_MAX_AGE.id, "certificate-not-trusted"), bounced)
        self.assertIn("MTA-STS policy of %s" % UNTIL_MAX_AGE.name, bounced["reply"], bounced)
        self.assertGreaterEqual(bounced["attempts"], 2, bounced)
        self.assertRediscoveredOnce(UNTIL_MAX_AGE, queue_id)
        for event in self.events_for("deferred", queue_id, relay=self.short_relay):
            self.assertEqual((event["policy_mode"], event["verification"]), ("enforce", "certificate-not-trusted"),
                             event)
        self.assertEqual(self.events_for("sent", queue_id, relay=self.short_relay), [])
        self.assertEqual(self.received_anywhere(UNTIL_MAX_AGE.name), [], "sent despite the enforced policy")

        # The DSN reaches the sender's domain's MX.
        notice = self.short_relay.wait_for_event("bounce_queued",
                                                 predicate=lambda e: e.get("original_id") == queue_id)
        self.assertEqual(bare_address(notice["recipient"]), sender, notice)
        self.outcome("sent", notice["queue_id"], relay=self.short_relay)
        [dsn] = [m for m in self.received(GOOD, SENDERS) if m["rcpt_tos"] == [sender]]
        self.assertEqual(dsn["mail_from"], "<>")
        report = email.message_from_bytes(dsn["data"], policy=email.policy.compat32)
        self.assertEqual(report.get_content_type(), "multipart/report")
        self.assertEqual(report.get_param("report-type"), "delivery-status")
        text = dsn["data"].decode("utf-8", "replace")
        [status] = [part for part in report.walk() if part.get_content_type() == "message/delivery-status"]
        [recipient] = status.get_payload()[1:]  # after the per-message fields
        self.assertRegex(recipient["Final-Recipient"], r"^rfc822; ?%s$" % re.escape(UNTIL_MAX_AGE.recipient))
        self.assertEqual(recipient["Action"], "failed", text)
        self.assertEqual(recipient["Status"], "5.7.5", text)  # the deferrals' 4.7.5, made permanent
        self.assertEqual(recipient["Remote-MTA"], "dns; " + UNTIL_MAX_AGE.mx.name, text)
        diagnostic = re.sub(r"\r?\n[ \t]+", " ", recipient["Diagnostic-Code"])
        self.assertIn("MTA-STS policy of %s (mode enforce, id %s) refused %s: certificate-not-trusted"
                      % (UNTIL_MAX_AGE.name, UNTIL_MAX_AGE.id, UNTRUSTED.name), diagnostic)
        self.assertIn("Subject: until max age", text)  # the original headers
        self.assertIsNone(self.short_relay.queue_entry(queue_id), "a bounced message stays in the queue")
        self.assertIsNone(self.short_relay.queue_entry(notice["queue_id"]))

    def test_enforce_failure_until_max_age_delivers_once_the_policy_is_none(self):
        policy_file = os.path.join(site_root(self.directory, WITHDRAWN.name), ".well-known", "mta-sts.txt")
        queue_id, sender, _ = self.assertHeldBackUntilMaxAge(WITHDRAWN, "withdrawn")
        # Same TXT id: the relay keeps the cached enforce policy until it
        # re-discovers the policy before bouncing.
        replace_file(policy_file, policy_text("none"))
        self.assertEqual(self.events_for("sts_rediscovery", queue_id, relay=self.short_relay), [],
                         "queue.max_age (%s) passed before the policy changed: nothing is tested" % SHORT_MAX_AGE)
        sent = self.outcome("sent", queue_id, relay=self.short_relay)
        self.assertEqual(sent["recipients"], ["<%s>" % WITHDRAWN.recipient], sent)
        # Opportunistic TLS to the MX the enforced policy refused.
        self.assertEqual((sent["mx"], sent["ip"]), (UNTRUSTED.name, UNTRUSTED.address), sent)
        self.assertEqual((sent["policy_mode"], sent["policy_id"], sent["verification"]),
                         ("none", WITHDRAWN.id, "certificate-not-trusted"), sent)
        self.assertIn(sent["tls_version"], TLS_1_2_OR_NEWER, sent)
        self.assertGreaterEqual(sent["attempts"], 2, sent)
        self.assertRediscoveredOnce(WITHDRAWN, queue_id)
        for event in self.events_for("deferred", queue_id, relay=self.short_relay):
            self.assertEqual(event["policy_mode"], "enforce", event)
        [message] = self.received(UNTRUSTED, WITHDRAWN.name)
        self.assertEqual((message["mail_from"], message["rcpt_tos"]), (sender, [WITHDRAWN.recipient]))
        self.assertEqual(subject_of(message["data"]), "withdrawn")
        self.assertTrue(message["tls"], message)
        self.assertEqual(message["tls_version"], sent["tls_version"], message)
        self.assertEqual(len(self.received_anywhere(WITHDRAWN.name)), 1, "delivered more than once")
        # No bounce.
        self.assertEqual(self.events_for("bounced", queue_id, relay=self.short_relay), [])
        self.assertEqual([e for e in self.short_relay.events_named("bounce_queued")
                          if e.get("original_id") == queue_id], [])
        self.assertEqual([m for m in self.received(GOOD, SENDERS) if m["rcpt_tos"] == [sender]], [])
        self.assertIsNone(self.short_relay.queue_entry(queue_id), "a sent message stays in the queue")


def interrupted(signum, frame):
    raise KeyboardInterrupt("signal %d" % signum)


if __name__ == "__main__":
    # A Ctrl-C or a SIGTERM (ctest's timeout) ends the run through the
    # cleanup below: unittest skips tearDownClass when interrupted.
    signal.signal(signal.SIGTERM, interrupted)
    try:
        relay_harness.main()
    finally:
        PolicyDnsInterop.cleanup()
