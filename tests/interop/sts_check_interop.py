"""Interop: `stsrelay sts-check --json` against real peers from Debian's
packages, all on loopback: unbound serves the test zone (MX, A and the
_mta-sts TXT records), nginx serves the policies over HTTPS with certificates
from a test CA made with the openssl command, and aiosmtpd (python3-aiosmtpd)
plays the MX hosts, offering STARTTLS with certificates from the same CA.

Every file lives in a temporary directory and every process started here is
stopped at the end. A peer that cannot be started fails the run: nothing is
skipped.

Run: /usr/bin/python3 -B sts_check_interop.py --stsrelay PATH [unittest args]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from peers import Peers, TestCa, free_port_on_all, policy_site, require_programs, site_root, write  # noqa: E402

STSRELAY = None
COMMAND_TIMEOUT = 30

POLICY_ADDRESS = "127.0.0.10"  # nginx: every mta-sts.* host
MX1_ADDRESS = "127.0.0.11"  # aiosmtpd: mx1.example.test
MX2_ADDRESS = "127.0.0.12"  # aiosmtpd: mx2.example.test
DNS_ADDRESS = "127.0.0.1"

# The domains and what each is for.
VALID = "example.test"  # a valid enforce setup
HTML = "html.test"  # the policy is served as text/html
MISSING = "missing.test"  # the policy URL answers 404
NOT_LISTED = "notlisted.test"  # an MX host the policy does not list
DOMAINS = [VALID, HTML, MISSING, NOT_LISTED]

MX1 = "mx1." + VALID
MX2 = "mx2." + VALID


def policy(*mx):
    return "version: STSv1\nmode: enforce\n" + "".join("mx: %s\n" % name for name in mx) + "max_age: 86400\n"


def zone_records():
    records = []
    for domain in DOMAINS:
        records.append("mta-sts.%s. 300 IN A %s" % (domain, POLICY_ADDRESS))
        records.append('_mta-sts.%s. 300 IN TXT "v=STSv1; id=20240101%s"' % (domain, domain.split(".")[0]))
    records.append("%s. 300 IN MX 10 %s." % (VALID, MX1))
    records.append("%s. 300 IN MX 20 %s." % (VALID, MX2))
    for domain in (HTML, MISSING):
        records.append("%s. 300 IN MX 10 %s." % (domain, MX1))
    records.append("%s. 300 IN MX 10 %s." % (NOT_LISTED, MX1))
    records.append("%s. 300 IN MX 20 %s." % (NOT_LISTED, MX2))
    records.append("%s. 300 IN A %s" % (MX1, MX1_ADDRESS))
    records.append("%s. 300 IN A %s" % (MX2, MX2_ADDRESS))
    # An unrelated TXT record beside the STS one must not disturb discovery.
    records.append('_mta-sts.%s. 300 IN TXT "v=spf1 -all"' % VALID)
    return records


class StsCheckInterop(unittest.TestCase):
    directory = None
    peers = None

    @classmethod
    def setUpClass(cls):
        require_programs("unbound", "nginx", "openssl")

        cls.directory = tempfile.mkdtemp(prefix="stsrelay-sts-check-")
        os.chmod(cls.directory, 0o755)  # nginx workers read the policies
        cls.peers = Peers(cls.directory)
        try:
            cls.start_peers()
        except BaseException:
            cls.cleanup()
            raise

    @classmethod
    def start_peers(cls):
        directory = cls.directory
        ca = TestCa(os.path.join(directory, "ca"))
        cls.ca_file = ca.cert
        policy_cert, policy_key = ca.issue("mta-sts", ["mta-sts." + domain for domain in DOMAINS])
        mx1_cert, mx1_key = ca.issue("mx1", [MX1])
        mx2_cert, mx2_key = ca.issue("mx2", [MX2])

        cls.dns_port = cls.peers.start_unbound(DNS_ADDRESS, zone_records())
        sites = [
            policy_site(directory, VALID, policy(MX1, MX2)),
            policy_site(directory, NOT_LISTED, policy(MX1)),
            # Valid policy text, but nginx calls it HTML.
            policy_site(directory, HTML, policy(MX1),
                        location="root %s; types { } default_type text/html;" % site_root(directory, HTML)),
            policy_site(directory, MISSING, location="return 404;"),
        ]
        cls.policy_port = cls.peers.start_nginx(POLICY_ADDRESS, policy_cert, policy_key, sites)

        cls.mx_port = free_port_on_all([MX1_ADDRESS, MX2_ADDRESS])
        for name, address, cert, key in (("mx1", MX1_ADDRESS, mx1_cert, mx1_key),
                                         ("mx2", MX2_ADDRESS, mx2_cert, mx2_key)):
            cls.peers.start_aiosmtpd(name, address, cls.mx_port, cert, key)

        cls.config_file = os.path.join(directory, "stsrelay.toml")
        write(cls.config_file, textwrap.dedent("""\
            hostname = "relay.test"
            [queue]
            directory = "{directory}/spool"
            [delivery]
            port = {mx_port}
            ca_file = "{ca_file}"
            connect_timeout = "10s"
            [dns]
            servers = ["{dns_address}:{dns_port}"]
            timeout = "5s"
            [sts]
            cache_file = "{directory}/sts-cache"
            policy_port = {policy_port}
            fetch_timeout = "10s"
            """).format(directory=directory, mx_port=cls.mx_port, ca_file=cls.ca_file, dns_address=DNS_ADDRESS,
                        dns_port=cls.dns_port, policy_port=cls.policy_port))

    @classmethod
    def cleanup(cls):
        try:
            if cls.peers is not None:
                cls.peers.stop()
        finally:
            if cls.directory is not None:
                shutil.rmtree(cls.directory, ignore_errors=True)

    @classmethod
    def tearDownClass(cls):
        cls.cleanup()

    def sts_check(self, domain, *flags):
        command = [STSRELAY, "sts-check", "--config", self.config_file, domain, "--json", *flags]
        result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, timeout=COMMAND_TIMEOUT)
        stdout = result.stdout.decode(errors="replace")
        stderr = result.stderr.decode(errors="replace")
        self.peers.check_alive()
        try:
            report = json.loads(stdout)
        except ValueError:
            self.fail("sts-check %s printed no JSON (exit %d):\n%s\n%s" % (domain, result.returncode, stdout, stderr))
        return result.returncode, report, stdout + stderr

    def assertShape(self, report):
        """The keys SPEC promises, with their types."""
        self.assertIsInstance(report["domain"], str)
        self.assertIsInstance(report["valid"], bool)
        self.assertEqual({"found", "id", "error"} - set(report["txt"]), set())
        self.assertEqual({"fetched", "mode", "max_age", "mx", "error"} - set(report["policy"]), set())
        self.assertIsInstance(report["policy"]["mx"], list)
        for host in report["mx_hosts"]:
            self.assertEqual({"name", "preference", "matches_policy", "starttls", "tls_version",
                              "certificate_valid", "error"} - set(host), set())

    def test_valid_enforce_setup(self):
        status, report, output = self.sts_check(VALID)
        self.assertShape(report)
        self.assertEqual(status, 0, output)
        self.assertTrue(report["valid"], output)
        self.assertEqual(report["domain"], VALID)
        self.assertEqual(report["txt"], {"found": True, "id": "20240101example", "error": None})
        self.assertTrue(report["policy"]["fetched"])
        self.assertEqual(report["policy"]["mode"], "enforce")
        self.assertEqual(report["policy"]["max_age"], 86400)
        self.assertEqual(report["policy"]["mx"], [MX1, MX2])
        self.assertIsNone(report["policy"]["error"])
        self.assertEqual([(h["name"], h["preference"]) for h in report["mx_hosts"]], [(MX1, 10), (MX2, 20)])
        for host in report["mx_hosts"]:
            self.assertTrue(host["matches_policy"], host)
            self.assertIs(host["starttls"], True, host)
            self.assertIn(host["tls_version"], ("TLSv1.2", "TLSv1.3"), host)
            self.assertIs(host["certificate_valid"], True, host)
            self.assertIsNone(host["error"], host)

    def test_policy_served_as_html(self):
        status, report, output = self.sts_check(HTML)
        self.assertShape(report)
        self.assertEqual(status, 1, output)
        self.assertFalse(report["valid"])
        self.assertFalse(report["policy"]["fetched"])
        self.assertIn("policy served with Content-Type text/html", report["policy"]["error"] or "", output)

    def test_policy_404(self):
        status, report, output = self.sts_check(MISSING)
        self.assertShape(report)
        self.assertEqual(status, 1, output)
        self.assertFalse(report["valid"])
        self.assertIn("HTTP 404", report["policy"]["error"] or "", output)

    def test_mx_not_in_the_policy(self):
        status, report, output = self.sts_check(NOT_LISTED)
        self.assertShape(report)
        self.assertEqual(status, 1, output)
        hosts = {host["name"]: host for host in report["mx_hosts"]}
        self.assertTrue(hosts[MX1]["matches_policy"])
        self.assertFalse(hosts[MX2]["matches_policy"])
        # mx2's TLS is fine: the only problem is the policy's list.
        self.assertIs(hosts[MX2]["certificate_valid"], True)
        self.assertIn("mx2.example.test does not match any mx pattern", output)

    def test_no_connect(self):
        status, report, output = self.sts_check(VALID, "--no-connect")
        self.assertShape(report)
        self.assertEqual(status, 0, output)
        self.assertTrue(report["valid"])
        for host in report["mx_hosts"]:
            self.assertTrue(host["matches_policy"])
            self.assertIsNone(host["starttls"])
            self.assertIsNone(host["tls_version"])
            self.assertIsNone(host["certificate_valid"])
        status, report, output = self.sts_check(NOT_LISTED, "--no-connect")
        self.assertEqual(status, 1, output)

    def test_domain_that_does_not_exist(self):
        status, report, output = self.sts_check("nosuch.test")
        self.assertShape(report)
        self.assertEqual(status, 1, output)
        self.assertFalse(report["txt"]["found"])
        self.assertIn("nosuch.test does not exist", output)

    def test_human_readable_output(self):
        result = subprocess.run([STSRELAY, "sts-check", "--config", self.config_file, HTML],
                                stdin=subprocess.DEVNULL, capture_output=True, timeout=COMMAND_TIMEOUT)
        text = result.stdout.decode(errors="replace")
        self.assertEqual(result.returncode, 1, text)
        self.assertIn("NOT valid", text)
        self.assertIn("policy served with Content-Type text/html", text)


def main():
    global STSRELAY
    parser = argparse.ArgumentParser()
    parser.add_argument("--stsrelay", required=True, help="path to the stsrelay binary")
    args, rest = parser.parse_known_args()
    STSRELAY = os.path.abspath(args.stsrelay)
    if not os.access(STSRELAY, os.X_OK):
        sys.exit("not an executable: %s" % STSRELAY)
    unittest.main(argv=[sys.argv[0], *rest], verbosity=2)


if __name__ == "__main__":
    main()
