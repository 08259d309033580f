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
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest

STSRELAY = None
STARTUP_TIMEOUT = 10  # seconds for one peer to start listening
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


def free_port(address):
    """A port free for both TCP and UDP on address (unbound needs both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((address, 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((address, port))
                except OSError:
                    continue
                return port
    raise AssertionError("no free TCP+UDP port on %s" % address)


def free_port_on_all(addresses):
    """One TCP port free on every address (the MX hosts share delivery.port)."""
    for _ in range(50):
        sockets = []
        try:
            first = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(first)
            first.bind((addresses[0], 0))
            port = first.getsockname()[1]
            for address in addresses[1:]:
                other = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sockets.append(other)
                other.bind((address, port))
            return port
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise AssertionError("no TCP port free on all of %s" % addresses)


def run(command, **kwargs):
    result = subprocess.run(command, capture_output=True, timeout=COMMAND_TIMEOUT, **kwargs)
    if result.returncode != 0:
        raise AssertionError("%s failed (%d):\n%s%s" % (" ".join(command), result.returncode,
                                                       result.stdout.decode(errors="replace"),
                                                       result.stderr.decode(errors="replace")))
    return result


class TestCa:
    """A test CA and its leaf certificates, made with the openssl command."""

    def __init__(self, directory):
        os.makedirs(directory)
        self.directory = directory
        self.serial = 1
        self.cert = os.path.join(directory, "ca.pem")
        self.key = os.path.join(directory, "ca.key")
        run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-subj", "/CN=stsrelay interop CA", "-days", "2",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-keyout", self.key, "-out", self.cert])

    def next_serial(self):
        self.serial += 1
        return self.serial

    def issue(self, stem, names):
        key = os.path.join(self.directory, stem + ".key")
        request = os.path.join(self.directory, stem + ".csr")
        cert = os.path.join(self.directory, stem + ".crt")
        extensions = os.path.join(self.directory, stem + ".ext")
        with open(extensions, "w") as out:
            out.write("basicConstraints=critical,CA:FALSE\n"
                      "extendedKeyUsage=serverAuth\n"
                      "subjectAltName=" + ",".join("DNS:" + name for name in names) + "\n")
        run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-subj", "/CN=" + names[0], "-keyout", key, "-out", request])
        run(["openssl", "x509", "-req", "-in", request, "-CA", self.cert, "-CAkey", self.key,
             "-set_serial", str(self.next_serial()), "-days", "1",
             "-extfile", extensions, "-out", cert])
        # Servers send the chain: leaf, then CA.
        with open(cert, "a") as chain, open(self.cert) as ca:
            chain.write(ca.read())
        return cert, key


class Peers:
    """The real servers, started in order; stop() ends every one of them."""

    def __init__(self, directory):
        self.directory = directory
        self.processes = []  # (name, Popen, log path)

    def start(self, name, command, address, port, protocol=socket.SOCK_STREAM):
        log = os.path.join(self.directory, name + ".log")
        with open(log, "wb") as out:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                       cwd=self.directory, start_new_session=True)
        self.processes.append((name, process, log))
        self.wait_listening(name, process, log, address, port)

    def wait_listening(self, name, process, log, address, port):
        """Waits until the server accepts a TCP connection: it then has loaded its config."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if process.poll() is not None:
                raise AssertionError("%s exited with %d before listening:\n%s" % (name, process.returncode,
                                                                                 self.log_of(log)))
            try:
                with socket.create_connection((address, port), timeout=1):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("%s is not listening on %s:%d after %ds:\n%s"
                                     % (name, address, port, STARTUP_TIMEOUT, self.log_of(log)))
            time.sleep(0.05)  # polling a process we do not control; not a timing assumption

    @staticmethod
    def log_of(path):
        try:
            with open(path, "rb") as log:
                return log.read()[-4000:].decode(errors="replace")
        except OSError:
            return "(no log)"

    def check_alive(self):
        for name, process, log in self.processes:
            if process.poll() is not None:
                raise AssertionError("%s died (%d):\n%s" % (name, process.returncode, self.log_of(log)))

    def stop(self):
        for _, process, _ in reversed(self.processes):
            if process.poll() is None:
                # The whole session: nginx's workers and whatever aiosmtpd spawned.
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for _, process, _ in reversed(self.processes):
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        self.processes = []


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as out:
        out.write(text)


def unbound_config(directory, port):
    records = []

    def add(record):
        records.append("  local-data: '%s'" % record)

    for domain in DOMAINS:
        add("mta-sts.%s. 300 IN A %s" % (domain, POLICY_ADDRESS))
        add('_mta-sts.%s. 300 IN TXT "v=STSv1; id=20240101%s"' % (domain, domain.split(".")[0]))
    add("%s. 300 IN MX 10 %s." % (VALID, MX1))
    add("%s. 300 IN MX 20 %s." % (VALID, MX2))
    for domain in (HTML, MISSING):
        add("%s. 300 IN MX 10 %s." % (domain, MX1))
    add("%s. 300 IN MX 10 %s." % (NOT_LISTED, MX1))
    add("%s. 300 IN MX 20 %s." % (NOT_LISTED, MX2))
    add("%s. 300 IN A %s" % (MX1, MX1_ADDRESS))
    add("%s. 300 IN A %s" % (MX2, MX2_ADDRESS))
    # An unrelated TXT record beside the STS one must not disturb discovery.
    add('_mta-sts.%s. 300 IN TXT "v=spf1 -all"' % VALID)
    return textwrap.dedent("""\
        server:
          interface: {address}
          port: {port}
          do-ip6: no
          do-daemonize: no
          username: ""
          chroot: ""
          directory: "{directory}"
          pidfile: "{directory}/unbound.pid"
          use-syslog: no
          logfile: ""
          verbosity: 1
          module-config: "iterator"
          access-control: 127.0.0.0/8 allow
          local-zone: "test." static
        """).format(address=DNS_ADDRESS, port=port, directory=directory) + "\n".join(records) + \
        "\nremote-control:\n  control-enable: no\n"


def nginx_config(directory, port, cert, key):
    www = os.path.join(directory, "www")
    servers = []
    for domain, location in [
        (VALID, "root %s/%s;" % (www, VALID)),
        (NOT_LISTED, "root %s/%s;" % (www, NOT_LISTED)),
        # Valid policy text, but nginx calls it HTML.
        (HTML, "root %s/%s; types { } default_type text/html;" % (www, HTML)),
        (MISSING, "return 404;"),
    ]:
        servers.append(textwrap.dedent("""\
            server {{
              listen {address}:{port} ssl;
              server_name mta-sts.{domain};
              location = /.well-known/mta-sts.txt {{ {location} }}
              location / {{ return 404; }}
            }}
            """).format(address=POLICY_ADDRESS, port=port, domain=domain, location=location))
    temp = os.path.join(directory, "nginx-temp")
    return textwrap.dedent("""\
        worker_processes 1;
        user root;
        pid {directory}/nginx.pid;
        error_log {directory}/nginx-error.log info;
        events {{ worker_connections 64; }}
        http {{
          access_log {directory}/nginx-access.log;
          client_body_temp_path {temp}/body;
          proxy_temp_path {temp}/proxy;
          fastcgi_temp_path {temp}/fastcgi;
          uwsgi_temp_path {temp}/uwsgi;
          scgi_temp_path {temp}/scgi;
          types {{ text/plain txt; text/html html; }}
          default_type application/octet-stream;
          ssl_certificate {cert};
          ssl_certificate_key {key};
          ssl_protocols TLSv1.2 TLSv1.3;
        """).format(directory=directory, temp=temp, cert=cert, key=key) + "".join(servers) + "}\n"


class StsCheckInterop(unittest.TestCase):
    directory = None
    peers = None

    @classmethod
    def setUpClass(cls):
        for program in ("unbound", "nginx", "openssl"):
            if shutil.which(program) is None and not os.path.exists("/usr/sbin/" + program):
                raise AssertionError("%s is not installed (see deploy/debian.sh test_packages)" % program)
        probe = subprocess.run(["/usr/bin/python3", "-c", "import aiosmtpd"], capture_output=True)
        if probe.returncode != 0:
            raise AssertionError("python3-aiosmtpd is not installed:\n" + probe.stderr.decode(errors="replace"))

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

        write(os.path.join(directory, "www", VALID, ".well-known", "mta-sts.txt"), policy(MX1, MX2))
        write(os.path.join(directory, "www", HTML, ".well-known", "mta-sts.txt"), policy(MX1))
        write(os.path.join(directory, "www", NOT_LISTED, ".well-known", "mta-sts.txt"), policy(MX1))
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            os.makedirs(os.path.join(directory, "nginx-temp", sub))

        cls.dns_port = free_port(DNS_ADDRESS)
        unbound_conf = os.path.join(directory, "unbound.conf")
        write(unbound_conf, unbound_config(directory, cls.dns_port))
        unbound = shutil.which("unbound") or "/usr/sbin/unbound"
        cls.peers.start("unbound", [unbound, "-d", "-c", unbound_conf], DNS_ADDRESS, cls.dns_port)

        cls.policy_port = free_port(POLICY_ADDRESS)
        nginx_conf = os.path.join(directory, "nginx.conf")
        write(nginx_conf, nginx_config(directory, cls.policy_port, policy_cert, policy_key))
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        cls.peers.start("nginx", [nginx, "-p", directory, "-c", nginx_conf, "-e",
                                  os.path.join(directory, "nginx-error.log"), "-g", "daemon off;"],
                        POLICY_ADDRESS, cls.policy_port)

        cls.mx_port = free_port_on_all([MX1_ADDRESS, MX2_ADDRESS])
        for name, address, cert, key in (("mx1", MX1_ADDRESS, mx1_cert, mx1_key),
                                         ("mx2", MX2_ADDRESS, mx2_cert, mx2_key)):
            cls.peers.start("aiosmtpd-" + name,
                            ["/usr/bin/python3", "-B", "-m", "aiosmtpd", "-n", "-c", "aiosmtpd.handlers.Sink",
                             "-l", "%s:%d" % (address, cls.mx_port), "--tlscert", cert, "--tlskey", key],
                            address, cls.mx_port)

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
