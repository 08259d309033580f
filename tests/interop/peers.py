"""Real peers from Debian's packages on loopback, shared by the interop tests:
unbound (a DNS zone), nginx (MTA-STS policies over HTTPS), aiosmtpd (MX
hosts) and a test CA made with the openssl command.

Every process is started in its own session so that Peers.stop() ends it
and whatever it spawned. Standard library only.
"""

import email
import email.policy
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


def family_of(address):
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def free_port_on_all(addresses):
    """One TCP port free on every address, IPv4 or IPv6 (the MX hosts share
    delivery.port)."""
    for _ in range(50):
        sockets = []
        try:
            first = socket.socket(family_of(addresses[0]), socket.SOCK_STREAM)
            sockets.append(first)
            first.bind((addresses[0], 0))
            port = first.getsockname()[1]
            for address in addresses[1:]:
                other = socket.socket(family_of(address), socket.SOCK_STREAM)
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


def issue_expired(ca, stem, names):
    """Like TestCa.issue, but the certificate's validity ended long ago (a
    fixed period in 2020; `openssl x509` in OpenSSL 3.0 cannot set dates in
    the past, `openssl ca` can). Returns (chain, key) paths."""
    directory = ca.directory
    key = os.path.join(directory, stem + ".key")
    request = os.path.join(directory, stem + ".csr")
    cert = os.path.join(directory, stem + ".crt")
    extensions = os.path.join(directory, stem + ".ext")
    database = os.path.join(directory, stem + ".index")
    serial = os.path.join(directory, stem + ".serial")
    config = os.path.join(directory, stem + ".cnf")
    write(extensions, "basicConstraints=critical,CA:FALSE\n"
                      "extendedKeyUsage=serverAuth\n"
                      "subjectAltName=" + ",".join("DNS:" + name for name in names) + "\n")
    write(database, "")
    write(serial, "%02X\n" % ca.next_serial())
    write(config, textwrap.dedent("""\
        [ ca ]
        default_ca = expired
        [ expired ]
        database = {database}
        new_certs_dir = {directory}
        serial = {serial}
        default_md = sha256
        policy = anything
        unique_subject = no
        [ anything ]
        commonName = supplied
        """).format(database=database, directory=directory, serial=serial))
    run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-subj", "/CN=" + names[0], "-keyout", key, "-out", request])
    run(["openssl", "ca", "-batch", "-config", config, "-cert", ca.cert, "-keyfile", ca.key, "-in", request,
         "-out", cert, "-notext", "-startdate", "20200101000000Z", "-enddate", "20200201000000Z",
         "-extfile", extensions])
    with open(cert, "a") as chain, open(ca.cert) as ca_pem:
        chain.write(ca_pem.read())
    return cert, key


# -- unbound with more configuration, reloadable; DNS and HTTPS probes ------

class Unbound:
    """An unbound started by start_unbound_server(): its zone can be
    rewritten and reloaded (unbound-control over a unix socket) while it runs."""

    def __init__(self, directory, address, port, more_config):
        self.directory = directory
        self.address = address
        self.port = port
        self.more_config = more_config
        self.conf = os.path.join(directory, "unbound.conf")
        self.control_socket = os.path.join(directory, "unbound.ctl")

    def config(self, records):
        # unbound reads clauses in order and a later setting wins: the extra
        # server options, zones and remote-control clause go after the base.
        return (unbound_config(self.directory, self.address, self.port, records) + self.more_config
                + "remote-control:\n  control-enable: yes\n  control-interface: %s\n  control-use-cert: no\n"
                % self.control_socket)

    def write(self, records):
        write(self.conf, self.config(records))

    def reload(self, records):
        """Serves RECORDS instead: rewrites the config and has unbound re-read it."""
        self.write(records)
        run([program("unbound-control"), "-c", self.conf, "reload"])


def start_unbound_server(peers, name, address, records, more_config=""):
    """unbound started by PEERS as NAME, in a directory of its own, serving
    RECORDS like Peers.start_unbound plus MORE_CONFIG (further "server:"
    options, forward-zone clauses...); returns an Unbound."""
    directory = os.path.join(peers.directory, name)
    os.makedirs(directory, exist_ok=True)
    unbound = Unbound(directory, address, free_port(address), more_config)
    unbound.write(records)
    peers.start(name, [program("unbound"), "-d", "-c", unbound.conf], address, unbound.port)
    return unbound

DNS_TYPES = {"A": 1, "MX": 15, "TXT": 16, "AAAA": 28}


class DnsAnswer:
    """A DNS response as the interop tests need it: header bits, and the
    answer records with whether their names (owner or in RDATA) used
    compression pointers (RFC 1035 §4.1.4)."""

    def __init__(self, raw):
        self.raw = raw
        flags = int.from_bytes(raw[2:4], "big")
        self.rcode = flags & 0x0F
        self.truncated = bool(flags & 0x0200)
        counts = [int.from_bytes(raw[i:i + 2], "big") for i in range(4, 12, 2)]
        position = 12
        for _ in range(counts[0]):
            _, position, _ = self.read_name(position)
            position += 4
        self.records = []  # (type, rdata text, compressed rdata name)
        for _ in range(counts[1]):
            _, position, _ = self.read_name(position)
            rtype = int.from_bytes(raw[position:position + 2], "big")
            length = int.from_bytes(raw[position + 8:position + 10], "big")
            rdata_at = position + 10
            position = rdata_at + length
            if rtype == DNS_TYPES["MX"]:
                name, _, compressed = self.read_name(rdata_at + 2)
                self.records.append(("MX", "%d %s" % (int.from_bytes(raw[rdata_at:rdata_at + 2], "big"), name),
                                     compressed))
            elif rtype == DNS_TYPES["TXT"]:
                strings, at = [], rdata_at
                while at < position:
                    strings.append(raw[at + 1:at + 1 + raw[at]].decode("ascii", "replace"))
                    at += 1 + raw[at]
                self.records.append(("TXT", "".join(strings), False))
            else:
                self.records.append((rtype, raw[rdata_at:position].hex(), False))

    def read_name(self, position):
        """(name, position after it, whether a pointer was followed)."""
        labels, compressed, end = [], False, None
        while True:
            length = self.raw[position]
            if length & 0xC0 == 0xC0:
                if end is None:
                    end = position + 2
                compressed = True
                position = int.from_bytes(self.raw[position:position + 2], "big") & 0x3FFF
                continue
            if length == 0:
                return ".".join(labels) + ".", end if end is not None else position + 1, compressed
            labels.append(self.raw[position + 1:position + 1 + length].decode("ascii", "replace"))
            position += 1 + length


def dns_query(address, port, name, rtype, tcp=False, edns_size=1232, timeout=10):
    """One query to ADDRESS:PORT as a stub resolver sends it (RD set, EDNS0
    with EDNS_SIZE unless None), over UDP or TCP; returns a DnsAnswer."""
    query_id = int.from_bytes(os.urandom(2), "big")
    message = query_id.to_bytes(2, "big") + bytes([1, 0, 0, 1, 0, 0, 0, 0, 0, 1 if edns_size else 0])
    message += b"".join(bytes([len(label)]) + label.encode() for label in name.rstrip(".").split("."))
    message += b"\0" + DNS_TYPES[rtype].to_bytes(2, "big") + b"\0\1"
    if edns_size:
        message += b"\0\0\x29" + edns_size.to_bytes(2, "big") + b"\0\0\0\0\0\0"
    if tcp:
        with socket.create_connection((address, port), timeout=timeout) as stream:
            stream.sendall(len(message).to_bytes(2, "big") + message)
            data = b""
            while len(data) < 2 or len(data) < 2 + int.from_bytes(data[:2], "big"):
                chunk = stream.recv(65536)
                if not chunk:
                    raise AssertionError("TCP answer from %s:%d cut short" % (address, port))
                data += chunk
            raw = data[2:]
    else:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as datagram:
            datagram.settimeout(timeout)
            datagram.sendto(message, (address, port))
            raw, _ = datagram.recvfrom(65536)
    if raw[:2] != message[:2]:
        raise AssertionError("DNS answer with another query id")
    return DnsAnswer(raw)


def https_get(address, port, host, path, ca_file, timeout=10):
    """GET https://HOST:PORT/PATH from ADDRESS, as HTTP/1.1 without any
    Accept-Encoding; returns the raw response bytes (headers and body as sent)."""
    import ssl
    context = ssl.create_default_context(cafile=ca_file)
    request = ("GET %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n" % (path, host, port)).encode()
    with socket.create_connection((address, port), timeout=timeout) as raw:
        with context.wrap_socket(raw, server_hostname=host) as stream:
            stream.sendall(request)
            response = b""
            while True:
                try:
                    chunk = stream.recv(65536)
                except ssl.SSLEOFError:
                    break
                if not chunk:
                    break
                response += chunk
    return response


WAIT_TIMEOUT = 60  # generous for a sanitizer build on a loaded machine; waits end as soon as they can


def wait_until(condition, what, timeout=WAIT_TIMEOUT, details=lambda: ""):
    """Polls CONDITION (other processes write what it reads) until it returns
    something true; fails naming WHAT after TIMEOUT."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("%s: not within %ds\n%s" % (what, timeout, details()))
        time.sleep(0.05)


def subject_of(data):
    """The Subject header of a message's bytes."""
    return email.message_from_bytes(data, policy=email.policy.compat32).get("Subject")


def relay_overrides(mx_port, ca_file, dns, policy_port, queue=None, delivery=None):
    """The relay's config sections for these peers: MX hosts on MX_PORT with
    certificates from CA_FILE, the zone from DNS ("ip:port"), policies on
    POLICY_PORT; quick retries, timeouts generous for a loaded machine.
    QUEUE and DELIVERY add to or replace keys of their sections."""
    return {
        "queue": {"retry_min": "1s", "retry_max": "2s", **(queue or {})},
        "delivery": {"port": mx_port, "ca_file": ca_file, "connect_timeout": "10s", "command_timeout": "30s",
                     **(delivery or {})},
        "dns": {"servers": [dns], "timeout": "5s"},
        "sts": {"policy_port": policy_port, "fetch_timeout": "10s"},
    }
