"""Real peers from Debian's packages on loopback, shared by the interop tests:
unbound (a DNS zone), nginx (MTA-STS policies over HTTPS), aiosmtpd (MX
hosts) and a test CA made with the openssl command.

Every process is started in its own session so that Peers.stop() ends it
and whatever it spawned. Standard library only.
"""

import os
import shutil
import signal
import socket
import subprocess
import textwrap
import time

STARTUP_TIMEOUT = 10  # seconds for one peer to start listening
COMMAND_TIMEOUT = 30


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


def require_programs(*programs):
    """Fails (never skips) when a peer program or python3-aiosmtpd is missing."""
    for program in programs:
        if shutil.which(program) is None and not os.path.exists("/usr/sbin/" + program):
            raise AssertionError("%s is not installed (see deploy/debian.sh test_packages)" % program)
    probe = subprocess.run(["/usr/bin/python3", "-c", "import aiosmtpd"], capture_output=True)
    if probe.returncode != 0:
        raise AssertionError("python3-aiosmtpd is not installed:\n" + probe.stderr.decode(errors="replace"))


def program(name):
    return shutil.which(name) or "/usr/sbin/" + name


class TestCa:
    """A test CA and its leaf certificates, made with the openssl command."""

    def __init__(self, directory, name="stsrelay interop CA"):
        os.makedirs(directory)
        self.directory = directory
        self.serial = 1
        self.cert = os.path.join(directory, "ca.pem")
        self.key = os.path.join(directory, "ca.key")
        run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-subj", "/CN=" + name, "-days", "2",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-keyout", self.key, "-out", self.cert])

    def next_serial(self):
        self.serial += 1
        return self.serial

    def issue(self, stem, names):
        """A server certificate for NAMES (the first is the CN); returns (chain, key) paths."""
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

    def start(self, name, command, address, port, env=None):
        log = os.path.join(self.directory, name + ".log")
        with open(log, "wb") as out:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                       cwd=self.directory, start_new_session=True, env=env)
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

    # -- the usual peers ---------------------------------------------------

    def start_unbound(self, address, records):
        """unbound serving RECORDS (zone-file lines) under a static "test." zone; returns its port."""
        port = free_port(address)
        conf = os.path.join(self.directory, "unbound.conf")
        write(conf, unbound_config(self.directory, address, port, records))
        self.start("unbound", [program("unbound"), "-d", "-c", conf], address, port)
        return port

    def start_nginx(self, address, cert, key, sites):
        """nginx serving the policy sites (see nginx_config) over HTTPS; returns its port."""
        port = free_port(address)
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            os.makedirs(os.path.join(self.directory, "nginx-temp", sub), exist_ok=True)
        conf = os.path.join(self.directory, "nginx.conf")
        write(conf, nginx_config(self.directory, address, port, cert, key, sites))
        self.start("nginx", [program("nginx"), "-p", self.directory, "-c", conf, "-e",
                             os.path.join(self.directory, "nginx-error.log"), "-g", "daemon off;"],
                   address, port)
        return port

    def start_aiosmtpd(self, name, address, port, cert=None, key=None, handler="aiosmtpd.handlers.Sink",
                       handler_args=(), pythonpath=None):
        """aiosmtpd on address:port, with STARTTLS when CERT and KEY are given."""
        command = ["/usr/bin/python3", "-B", "-m", "aiosmtpd", "-n", "-c", handler, "-l", "%s:%d" % (address, port)]
        if cert is not None:
            command += ["--tlscert", cert, "--tlskey", key]
        if handler_args:
            # "--": the handler's own options are not aiosmtpd's.
            command += ["--", *handler_args]
        env = None
        if pythonpath is not None:
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [pythonpath, env.get("PYTHONPATH")]))
        self.start("aiosmtpd-" + name, command, address, port, env=env)


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as out:
        out.write(text)


def unbound_config(directory, address, port, records):
    """RECORDS: zone-file lines ("name. TTL IN TYPE data") served under a static "test." zone."""
    local_data = "".join("  local-data: '%s'\n" % record for record in records)
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
        """).format(address=address, port=port, directory=directory) + local_data + \
        "remote-control:\n  control-enable: no\n"


def policy_site(directory, domain, text=None, location=None):
    """One nginx site for mta-sts.DOMAIN, for nginx_config: TEXT (if given) is written as
    the policy file under site_root(); LOCATION (nginx directives for
    /.well-known/mta-sts.txt) defaults to serving that file."""
    if text is not None:
        write(os.path.join(site_root(directory, domain), ".well-known", "mta-sts.txt"), text)
    if location is None:
        location = "root %s;" % site_root(directory, domain)
    return domain, location


def site_root(directory, domain):
    return os.path.join(directory, "www", domain)


def nginx_config(directory, address, port, cert, key, sites):
    """SITES: (domain, location directives) pairs, one HTTPS server mta-sts.DOMAIN each."""
    servers = []
    for domain, location in sites:
        servers.append(textwrap.dedent("""\
            server {{
              listen {address}:{port} ssl;
              server_name mta-sts.{domain};
              location = /.well-known/mta-sts.txt {{ {location} }}
              location / {{ return 404; }}
            }}
            """).format(address=address, port=port, domain=domain, location=location))
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
