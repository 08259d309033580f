"""stsrelay and Postfix + postfix-mta-sts-resolver, measured in one run.

Started by bench/run inside a network namespace of its own, so that every
program uses the real ports and the namespace's DNS server:

  127.0.0.1:53    unbound: MX, A and _mta-sts TXT records of bench.test
  127.0.0.44:443  nginx: mta-sts.bench.test, an `enforce` policy naming
                  mx.bench.test, certificate from a CA made for this run
  127.0.0.25:25   bench/tls_sink: the MX, STARTTLS, counts and discards
  127.0.0.1:25    the system under test, one at a time: stsrelay, or Postfix
                  whose smtp_tls_policy_maps is postfix-mta-sts-resolver
                  (socketmap on 127.0.0.1:8461)

Postfix's smtp-source submits the load; bench/accept_probe samples the accept
latency alongside it. See bench/README.md.
"""

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

DOMAIN = "bench.test"
MX_NAME = "mx." + DOMAIN
MX_ADDRESS = "127.0.0.25"
POLICY_ADDRESS = "127.0.0.44"
SUT_ADDRESS = "127.0.0.1"
RESOLVER_PORT = 8461
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# (label, message size, messages per run)
SIZES = [("4KiB", 4096, 20000), ("100KiB", 102400, 2000)]
SESSIONS = [1, 10, 50]
# smtp-source -d: several messages per session; without it: one per session.
REUSE = [("many/session", True), ("1/session", False)]


def fail(message):
    print("bench/run: " + message, file=sys.stderr)
    sys.exit(1)


def run_quietly(command, **kwargs):
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)
    if result.returncode != 0:
        fail("%s failed:\n%s" % (" ".join(command), result.stdout))
    return result.stdout


# --- processes, CPU and memory from /proc ------------------------------------


def process_table():
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields[1] is the ppid; utime, stime, cutime, cstime are fields[11:15].
        table[int(name)] = (int(fields[1]), sum(int(x) for x in fields[11:15]))
    return table


def tree(root, table):
    members, grew = {root}, True
    while grew:
        grew = False
        for pid, (ppid, _) in table.items():
            if ppid in members and pid not in members:
                members.add(pid)
                grew = True
    return [pid for pid in members if pid in table]


def cpu_seconds(roots):
    """CPU of process trees. A tree counts its live processes and, through
    cutime/cstime, the children it has reaped (Postfix's master reaps its
    daemons), so the difference of two readings is what ran in between."""
    table = process_table()
    ticks = 0
    for root in roots:
        ticks += sum(table[pid][1] for pid in tree(root, table))
    return ticks / CLOCK_TICKS


def memory_kib(pid, key):
    """A line of /proc/PID/smaps_rollup: "Rss" or "Pss" (shared pages divided
    among the processes that map them, so a family of processes sums fairly)."""
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class MemorySampler(threading.Thread):
    """The largest sums of RSS and of PSS over process trees, sampled every
    0.2 s: the only peak there is for a family of processes that come and
    go, measured the same way for both systems. Summed RSS counts the pages
    that processes share (libraries) once per process; PSS divides them
    among the processes, so its sum is the fair figure for Postfix's many
    processes. For one process the two differ only by its share of shared
    pages."""

    def __init__(self, roots):
        super().__init__(daemon=True)
        self.roots = roots
        self.peak_rss_kib = 0
        self.peak_pss_kib = 0
        self.done = threading.Event()

    def run(self):
        while not self.done.wait(0.2):
            table = process_table()
            pids = [pid for root in self.roots for pid in tree(root, table)]
            self.peak_rss_kib = max(self.peak_rss_kib, sum(memory_kib(pid, "Rss") for pid in pids))
            self.peak_pss_kib = max(self.peak_pss_kib, sum(memory_kib(pid, "Pss") for pid in pids))

    def stop(self):
        """Returns the peaks (RSS, PSS) in KiB."""
        self.done.set()
        self.join()
        return self.peak_rss_kib, self.peak_pss_kib


def wait_for_port(address, port, name, process=None):
    import socket

    for _ in range(400):
        if process is not None and process.poll() is not None:
            fail("%s exited with status %d before listening on %s:%d" % (name, process.returncode, address, port))
        try:
            socket.create_connection((address, port), 1).close()
            return
        except OSError:
            time.sleep(0.05)
    fail("%s did not start listening on %s:%d" % (name, address, port))


def stop_process(process, timeout=30):
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- the destination: CA, DNS, policy host, sink ----------------------------


class Destination:
    def __init__(self, work, build):
        self.work = work
        self.build = build
        self.processes = []

    def start(self):
        self.make_certificates()
        self.start_dns()
        self.start_policy_host()
        self.start_sink()

    def make_certificates(self):
        w = self.work
        run_quietly(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                     "-days", "2", "-subj", "/CN=Bench Test CA", "-keyout", w + "/ca.key", "-out", w + "/ca.pem"])
        for name, host in (("mx", MX_NAME), ("policy", "mta-sts." + DOMAIN)):
            run_quietly(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                         "-subj", "/CN=" + host, "-keyout", "%s/%s.key" % (w, name), "-out", "%s/%s.csr" % (w, name)])
            with open("%s/%s.ext" % (w, name), "w") as f:
                f.write("subjectAltName=DNS:%s\n" % host)
            run_quietly(["openssl", "x509", "-req", "-in", "%s/%s.csr" % (w, name), "-CA", w + "/ca.pem", "-CAkey",
                         w + "/ca.key", "-CAcreateserial", "-days", "2", "-extfile", "%s/%s.ext" % (w, name),
                         "-out", "%s/%s.pem" % (w, name)])
        self.ca_file = w + "/ca.pem"

    def start_dns(self):
        config = self.work + "/unbound.conf"
        with open(config, "w") as f:
            f.write(f"""server:
  interface: 127.0.0.1
  port: 53
  do-ip6: no
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "{self.work}"
  pidfile: "{self.work}/unbound.pid"
  use-syslog: no
  logfile: ""
  module-config: "iterator"
  access-control: 127.0.0.0/8 allow
  # Nothing leaves the namespace: unknown names get NXDOMAIN at once.
  local-zone: "." static
  local-data: "{DOMAIN}. 3600 IN MX 10 {MX_NAME}."
  local-data: "{MX_NAME}. 3600 IN A {MX_ADDRESS}"
  local-data: '_mta-sts.{DOMAIN}. 3600 IN TXT "v=STSv1; id=bench1"'
  local-data: "mta-sts.{DOMAIN}. 3600 IN A {POLICY_ADDRESS}"
remote-control:
  control-enable: no
""")
        self.dns = subprocess.Popen(["unbound", "-d", "-c", config], stderr=open(self.work + "/unbound.log", "w"))
        self.processes.append(self.dns)
        wait_for_port("127.0.0.1", 53, "unbound", self.dns)

    def start_policy_host(self):
        w = self.work
        os.makedirs(w + "/www/.well-known", exist_ok=True)
        os.makedirs(w + "/nginx-temp", exist_ok=True)
        with open(w + "/www/.well-known/mta-sts.txt", "w") as f:
            f.write("version: STSv1\r\nmode: enforce\r\nmx: %s\r\nmax_age: 86400\r\n" % MX_NAME)
        temp_paths = "".join("  %s_temp_path %s/nginx-temp;\n" % (kind, w)
                             for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        with open(w + "/nginx.conf", "w") as f:
            f.write(f"""worker_processes 1;
user root;
pid {w}/nginx.pid;
error_log {w}/nginx-error.log;
events {{ worker_connections 256; }}
http {{
  access_log {w}/nginx-access.log;
{temp_paths}  types {{ text/plain txt; }}
  server {{
    listen {POLICY_ADDRESS}:443 ssl;
    server_name mta-sts.{DOMAIN};
    ssl_certificate {w}/policy.pem;
    ssl_certificate_key {w}/policy.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    root {w}/www;
  }}
}}
""")
        self.https = subprocess.Popen(["nginx", "-p", w, "-c", w + "/nginx.conf", "-e", w + "/nginx-error.log",
                                       "-g", "daemon off;"])
        self.processes.append(self.https)
        wait_for_port(POLICY_ADDRESS, 443, "nginx", self.https)

    def start_sink(self):
        self.count_file = self.work + "/sink.counts"
        self.sink = subprocess.Popen([self.build + "/bench/tls_sink", "--listen", MX_ADDRESS + ":25",
                                      "--cert", self.work + "/mx.pem", "--key", self.work + "/mx.key",
                                      "--hostname", MX_NAME, "--count-file", self.count_file],
                                     stderr=open(self.work + "/sink.log", "w"))
        self.processes.append(self.sink)
        wait_for_port(MX_ADDRESS, 25, "tls_sink", self.sink)

    def sink_counts(self):
        """(messages, connections, full handshakes, last message time, resumed handshakes)"""
        self.sink.send_signal(signal.SIGUSR1)
        for _ in range(100):
            time.sleep(0.02)
            try:
                with open(self.count_file) as f:
                    fields = f.read().split()
            except OSError:
                continue
            if len(fields) >= 4:
                resumed = int(fields[4]) if len(fields) > 4 else 0
                return int(fields[0]), int(fields[1]), int(fields[2]), float(fields[3]), resumed
        fail("tls_sink wrote no counts")

    def wait_for_messages(self, target, name):
        """Polls the sink until it has counted target messages (a bound only
        against a broken run hanging for ever, not a timing assertion)."""
        deadline = time.monotonic() + 1800
        while True:
            counts = self.sink_counts()
            if counts[0] >= target:
                return counts
            if time.monotonic() > deadline:
                fail("%s: the sink got %d of %d messages in 30 minutes" % (name, counts[0], target))
            time.sleep(0.1)

    def cpu(self):
        return {"sink": cpu_seconds([self.sink.pid]),
                "dns_https": cpu_seconds([self.dns.pid, self.https.pid])}

    def stop(self):
        for process in reversed(self.processes):
            stop_process(process)


# --- the systems under test -------------------------------------------------


class Stsrelay:
    name = "stsrelay"

    def __init__(self, work, build, ca_file):
        self.binary = build + "/relay/stsrelay"
        self.work = work
        self.ca_file = ca_file

    def start(self, directory):
        self.directory = directory
        os.makedirs(directory)
        self.config = directory + "/relay.toml"
        with open(self.config, "w") as f:
            f.write(f"""hostname = "relay.client.test"
[listen]
addresses = ["{SUT_ADDRESS}:25"]
max_connections = 2000
[queue]
directory = "{directory}/spool"
[delivery]
ca_file = "{self.ca_file}"
[sts]
cache_file = "{directory}/sts-cache"
[log]
level = "info"
""")
        self.process = subprocess.Popen([self.binary, "run", "--config", self.config],
                                        stderr=open(directory + "/relay.log", "w"))
        wait_for_port(SUT_ADDRESS, 25, "stsrelay", self.process)
        return [self.process.pid]

    def queue_empty(self):
        listing = subprocess.run([self.binary, "queue", "list", "--json", "--config", self.config],
                                 stdout=subprocess.PIPE, text=True, check=True).stdout
        return json.loads(listing) == []

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        status = self.process.wait(600)
        if status != 0:
            fail("stsrelay exited with status %d; see %s/relay.log" % (status, self.directory))
        return self.log_summary()

    def log_summary(self):
        summary = {}
        with open(self.directory + "/relay.log") as f:
            log = f.read()
        sent = re.findall(r"^.* sent .*$", log, re.M)
        summary["sent_enforced"] = sum(1 for line in sent if "policy_mode=enforce" in line and
                                       "verification=valid" in line)
        summary["sent"] = len(sent)
        # The `stopped` event: how well group commit batched the queue's writes.
        for key in ("messages_per_commit", "attempts_per_commit"):
            found = re.search(r"\b%s=\"?([0-9.]+)" % key, log)
            if found:
                summary[key] = float(found.group(1))
        return summary


def write_master_cf(conf, smtp_listen):
    """Debian's master.cf, every service outside a chroot, the smtpd service
    listening on smtp_listen, plus tlsproxy (which smtp_tls_connection_reuse
    needs)."""
    with open("/usr/share/postfix/master.cf.dist") as f:
        lines = []
        for line in f:
            if line.startswith("#"):
                continue
            fields = line.split()
            if len(fields) >= 8 and re.match(r"^[a-z]", line):
                fields[4] = "n"
                if fields[0] == "smtp" and fields[1] == "inet":
                    fields[0] = smtp_listen
                line = " ".join(fields) + "\n"
            lines.append(line)
    lines.append("tlsproxy unix - - n - 0 tlsproxy\n")
    with open(conf + "/master.cf", "w") as f:
        f.writelines(lines)


def configure_postfix(directory, myhostname, settings, smtp_listen):
    """A private Postfix instance in `directory`: its config (main.cf with
    the paths, a log file, relaying for loopback, and `settings`), queue and
    data directories. Returns the config and queue directories."""
    conf, spool, data = directory + "/conf", directory + "/spool", directory + "/data"
    for path in (conf, spool, data):
        os.makedirs(path)
    shutil.chown(data, "postfix")
    with open(conf + "/main.cf", "w") as f:
        f.write(f"""compatibility_level = 3.6
queue_directory = {spool}
data_directory = {data}
maillog_file = {directory}/maillog
maillog_file_prefixes = {directory}
myhostname = {myhostname}
mydestination =
inet_interfaces = {SUT_ADDRESS}
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
""" + settings)
    write_master_cf(conf, smtp_listen)
    return conf, spool


def start_postfix(conf):
    # Postfix says why it fails only to a terminal.
    started = subprocess.run(["script", "-qec", "postfix -c %s check && postfix -c %s start" % (conf, conf),
                              "/dev/null"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if started.returncode != 0:
        fail("postfix did not start: " + started.stdout)


def stop_postfix(conf, master):
    subprocess.run(["postfix", "-c", conf, "stop"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while os.path.exists("/proc/%d" % master):
        time.sleep(0.1)


class Postfix:
    name = "postfix"

    def __init__(self, work, build, ca_file):
        self.work = work
        self.ca_file = ca_file

    def start(self, directory):
        self.directory = directory
        conf, spool = configure_postfix(directory, "postfix.client.test", f"""local_transport = error:no local delivery
alias_maps =
alias_database =
smtp_tls_security_level = may
smtp_tls_CAfile = {self.ca_file}
smtp_tls_policy_maps = socketmap:inet:127.0.0.1:{RESOLVER_PORT}:postfix
smtp_tls_connection_reuse = yes
smtp_tls_session_cache_database = btree:${{data_directory}}/smtp_scache
""", "smtp")
        self.conf = conf
        # The resolver starts with an empty cache each run, like stsrelay.
        with open(directory + "/mta-sts-daemon.yml", "w") as f:
            f.write(f"""host: 127.0.0.1
port: {RESOLVER_PORT}
reuse_port: true
shutdown_timeout: 20
cache:
  type: internal
  options:
    cache_size: 10000
default_zone:
  strict_testing: false
  timeout: 4
""")
        environment = dict(os.environ, SSL_CERT_FILE=self.ca_file)
        environment.pop("SSL_CERT_DIR", None)
        self.resolver = subprocess.Popen(["mta-sts-daemon", "-c", directory + "/mta-sts-daemon.yml", "-v", "warn"],
                                         env=environment, stderr=open(directory + "/resolver.log", "w"))
        wait_for_port("127.0.0.1", RESOLVER_PORT, "mta-sts-daemon", self.resolver)
        start_postfix(conf)
        with open(spool + "/pid/master.pid") as f:
            self.master = int(f.read().strip())
        wait_for_port(SUT_ADDRESS, 25, "postfix")
        return [self.master, self.resolver.pid]

    def queue_empty(self):
        for queue in ("incoming", "active", "deferred", "maildrop"):
            for _, _, files in os.walk(os.path.join(self.directory, "spool", queue)):
                if files:
                    return False
        return True

    def stop(self):
        stop_postfix(self.conf, self.master)
        stop_process(self.resolver)
        summary = {}
        with open(self.directory + "/maillog", errors="replace") as f:
            log = f.read()
        sent = re.findall(r"status=sent", log)
        summary["sent"] = len(sent)
        summary["sent_enforced"] = len(re.findall(r"Verified TLS connection established to " + re.escape(MX_NAME),
                                                  log))
        return summary


def compare_sinks(destination, work, count, sessions=50, size=4096):
    """The sink measured alone, before any relay, so that it can be shown not
    to be the bottleneck; and Postfix's smtpd with a discard transport, the
    other candidate, measured the same way. smtp-source speaks no TLS, so
    both are driven in plaintext; the sink's CPU during the real runs, over
    TLS, is in the table."""
    def drive(listen):
        start = time.time()
        run_quietly(["smtp-source", "-d", "-s", str(sessions), "-m", str(count), "-l", str(size),
                     "-f", "load@client.test", "-t", "sink@" + DOMAIN, listen])
        return start

    before = destination.sink_counts()
    before_cpu = destination.cpu()["sink"]
    start = drive("%s:25" % MX_ADDRESS)
    counts = destination.wait_for_messages(before[0] + count, "tls_sink alone")
    ours = (count / (counts[3] - start), 1000.0 * (destination.cpu()["sink"] - before_cpu) / count)

    directory = work + "/postfix-sink"
    conf, spool = configure_postfix(directory, MX_NAME, f"""default_transport = discard:sink
relay_transport = discard:sink
smtpd_tls_cert_file = {work}/mx.pem
smtpd_tls_key_file = {work}/mx.key
smtpd_tls_security_level = may
""", "%s:2526" % SUT_ADDRESS)
    start_postfix(conf)
    with open(spool + "/pid/master.pid") as f:
        master = int(f.read().strip())
    wait_for_port(SUT_ADDRESS, 2526, "postfix sink")
    before_cpu = cpu_seconds([master])
    start = drive("%s:2526" % SUT_ADDRESS)
    while True:  # accepted, queued, then discarded: done when the queue is empty
        if not any(files for queue in ("incoming", "active", "deferred")
                   for _, _, files in os.walk(os.path.join(spool, queue))):
            break
        time.sleep(0.05)
    theirs = (count / (time.time() - start), 1000.0 * (cpu_seconds([master]) - before_cpu) / count)
    stop_postfix(conf, master)
    shutil.rmtree(directory, ignore_errors=True)
    print("sink alone, %d x %d bytes, %d sessions, plaintext: bench/tls_sink %.0f msgs/s (%.2f CPU s/1000);"
          " Postfix smtpd + discard %.0f msgs/s (%.2f CPU s/1000): %s is the sink" %
          (count, size, sessions, ours[0], ours[1], theirs[0], theirs[1],
           "bench/tls_sink" if ours[0] >= theirs[0] else "Postfix would be faster, yet bench/tls_sink"))


# --- one measured run --------------------------------------------------------


def measure(system, destination, tools, work, row, run_index):
    label, size, count, sessions, reuse = row
    directory = "%s/%s-%s-%d-%s-%d" % (work, system.name, label, sessions, "d" if reuse else "1", run_index)
    roots = system.start(directory)
    before_counts = destination.sink_counts()
    before_cpu = cpu_seconds(roots)
    before_peers = destination.cpu()
    sampler = MemorySampler(roots)
    sampler.start()
    stop_file = directory + "/probe.stop"
    probe = subprocess.Popen([tools + "/accept_probe", "--server", "%s:25" % SUT_ADDRESS, "--size", str(size),
                              "--interval-ms", "50", "--until-file", stop_file, "--from", "probe@client.test",
                              "--to", "probe@" + DOMAIN], stdout=subprocess.PIPE, text=True)
    command = ["smtp-source", "-s", str(sessions), "-m", str(count), "-l", str(size), "-f", "load@client.test",
               "-t", "sink@" + DOMAIN, "%s:25" % SUT_ADDRESS]
    if reuse:
        command.insert(1, "-d")
    start = time.time()
    load = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=open(directory + "/smtp-source.log", "w"))
    _, status, load_usage = os.wait4(load.pid, 0)
    load.returncode = os.waitstatus_to_exitcode(status)
    accepted = time.time()
    with open(stop_file, "w"):
        pass
    probe_output, _ = probe.communicate()
    if load.returncode != 0:
        fail("%s: smtp-source failed, see %s/smtp-source.log" % (system.name, directory))
    if probe.returncode != 0:
        fail("%s: accept_probe failed: %s" % (system.name, probe_output))
    latency = json.loads(probe_output)
    total = count + latency["messages"]
    counts = destination.wait_for_messages(before_counts[0] + total, system.name)
    while not system.queue_empty():
        time.sleep(0.1)
    after_cpu = cpu_seconds(roots)
    after_peers = destination.cpu()
    peak_rss, peak_pss = sampler.stop()
    summary = system.stop()
    if summary.get("sent_enforced", 0) == 0:
        fail("%s: no delivery was logged as verified under the policy; see %s" % (system.name, directory))
    elapsed = counts[3] - start
    per_thousand = 1000.0 / total
    result = {
        "system": system.name, "row": [label, sessions, reuse], "run": run_index,
        "messages": total,
        "throughput": total / elapsed,
        "accepted_per_s": count / (accepted - start),
        "p50_ms": latency["p50_ms"], "p99_ms": latency["p99_ms"], "probe_messages": latency["messages"],
        "cpu_per_1000": (after_cpu - before_cpu) * per_thousand,
        "peak_rss_mib": peak_rss / 1024.0,
        "peak_pss_mib": peak_pss / 1024.0,
        "connections_per_1000": (counts[1] - before_counts[1]) * per_thousand,
        "full_handshakes_per_1000": (counts[2] - before_counts[2]) * per_thousand,
        "resumed_handshakes_per_1000": (counts[4] - before_counts[4]) * per_thousand,
        "load_cpu_per_1000": (load_usage.ru_utime + load_usage.ru_stime) * per_thousand,
        "sink_cpu_per_1000": (after_peers["sink"] - before_peers["sink"]) * per_thousand,
        "dns_https_cpu_per_1000": (after_peers["dns_https"] - before_peers["dns_https"]) * per_thousand,
        "sink_busy": (after_peers["sink"] - before_peers["sink"]) / elapsed,
        "elapsed_s": elapsed,
    }
    result.update(summary)
    shutil.rmtree(directory, ignore_errors=True)  # a 20k-message spool is large
    return result


# --- the machine's own limits and the memory figures -------------------------


def machine_description():
    model = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        memory_kib = int(f.readline().split()[1])
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    return "%d x %s, %.0f GiB, Linux %s, load average %s at start" % (
        os.cpu_count(), model, memory_kib / 1024 / 1024, os.uname().release, load)


def machine_limits(tools, work):
    output = run_quietly([tools + "/machine_limits", "--dir", work])
    print("machine limits, measured now:")
    for line in output.splitlines():
        print("  " + line)
    return output


def memory_figures(system, tools, work, sessions):
    """stsrelay's RSS idle, and with `sessions` idle inbound sessions open."""
    roots = system.start(work + "/memory")
    time.sleep(1)
    idle = memory_kib(roots[0], "Rss")
    holder = subprocess.Popen([tools + "/idle_sessions", "--server", "%s:25" % SUT_ADDRESS,
                               "--sessions", str(sessions)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = holder.stdout.readline()
    if not line.startswith("open"):
        fail("idle_sessions did not open its sessions: " + line)
    time.sleep(1)
    loaded = memory_kib(roots[0], "Rss")
    holder.stdin.close()
    holder.wait(60)
    system.stop()
    return idle, loaded


# --- the table ---------------------------------------------------------------

METRICS = [
    # key, heading, format, better (for the reader)
    ("throughput", "delivered msgs/s", "%.0f"),
    ("p50_ms", "accept p50 ms", "%.1f"),
    ("p99_ms", "accept p99 ms", "%.1f"),
    ("cpu_per_1000", "relay CPU s/1000 msgs", "%.2f"),
    ("peak_rss_mib", "relay peak RSS MiB (summed)", "%.1f"),
    ("peak_pss_mib", "relay peak PSS MiB (summed)", "%.1f"),
    ("connections_per_1000", "sink connections/1000", "%.0f"),
    ("full_handshakes_per_1000", "full TLS handshakes/1000", "%.0f"),
    ("resumed_handshakes_per_1000", "resumed TLS handshakes/1000", "%.0f"),
    ("load_cpu_per_1000", "smtp-source CPU s/1000", "%.2f"),
    ("sink_cpu_per_1000", "sink CPU s/1000", "%.2f"),
    ("dns_https_cpu_per_1000", "DNS+HTTPS CPU s/1000", "%.3f"),
    ("sink_busy", "sink busy (cores)", "%.2f"),
]


def median_and_spread(values, form):
    middle = statistics.median(values)
    if len(values) > 1:
        return (form % middle) + " (" + (form % min(values)) + "–" + (form % max(values)) + ")"
    return form % middle


def rows_in_order(results):
    """The rows that have results, in the order they ran."""
    rows = []
    for result in results:
        if tuple(result["row"]) not in rows:
            rows.append(tuple(result["row"]))
    return rows


def values_of(results, system, row, metric):
    """One metric of every run of one system in one row."""
    return [r[metric] for r in results if r["system"] == system and tuple(r["row"]) == row and metric in r]


def print_table(results, systems):
    rows = rows_in_order(results)
    print()
    print("| row | metric | " + " | ".join(s + " median (min–max)" for s in systems) +
          (" | ratio stsrelay/postfix |" if len(systems) == 2 else " |"))
    print("|---|---|" + "---|" * len(systems) + ("---|" if len(systems) == 2 else ""))
    for key in rows:
        label, sessions, reuse = key
        name = "%s, %d session%s, %s" % (label, sessions, "" if sessions == 1 else "s",
                                         "many msgs/session" if reuse else "1 msg/session")
        for metric, heading, form in METRICS:
            cells, medians = [], []
            for system in systems:
                values = values_of(results, system, key, metric)
                if not values:
                    cells.append("")
                    medians.append(None)
                    continue
                cells.append(median_and_spread(values, form))
                medians.append(statistics.median(values))
            ratio = ""
            if len(systems) == 2 and None not in medians:
                ratio = "%.2f" % (medians[0] / medians[1]) if medians[1] else "–"
            print("| %s | %s | %s |%s" % (name, heading, " | ".join(cells),
                                          (" %s |" % ratio) if len(systems) == 2 else ""))
        for metric, heading in (("messages_per_commit", "stsrelay accepted messages per queue commit"),
                                ("attempts_per_commit", "stsrelay delivery outcomes per queue commit")):
            values = values_of(results, "stsrelay", key, metric)
            if values:
                print("| %s | %s | %s |%s" % (name, heading, median_and_spread(values, "%.1f"),
                                              " | |" if len(systems) == 2 else ""))


def print_summary(results, systems):
    """One line per row: the figures the targets are about."""
    if systems != ["stsrelay", "postfix"]:
        return

    def median_of(system, key, metric):
        values = values_of(results, system, key, metric)
        return statistics.median(values) if values else None

    rows = rows_in_order(results)
    print()
    print("| row | msgs/s stsrelay | msgs/s Postfix | ratio | CPU ms/msg stsrelay | CPU ms/msg Postfix | ratio "
          "| p99 ms stsrelay | p99 ms Postfix | handshakes/msg stsrelay (full+resumed) | Postfix |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for key in rows:
        label, sessions, reuse = key
        figures = {}
        for system in systems:
            for metric in ("throughput", "cpu_per_1000", "p99_ms", "full_handshakes_per_1000",
                           "resumed_handshakes_per_1000"):
                figures[system, metric] = median_of(system, key, metric)
        if None in figures.values():
            continue

        def handshakes(system):
            return "%.3f+%.3f" % (figures[system, "full_handshakes_per_1000"] / 1000,
                                  figures[system, "resumed_handshakes_per_1000"] / 1000)

        print("| %s, %d sess., %s | %.0f | %.0f | %.1f | %.2f | %.2f | %.2f | %.1f | %.1f | %s | %s |" % (
            label, sessions, "many/sess." if reuse else "1/sess.",
            figures["stsrelay", "throughput"], figures["postfix", "throughput"],
            figures["stsrelay", "throughput"] / figures["postfix", "throughput"],
            figures["stsrelay", "cpu_per_1000"], figures["postfix", "cpu_per_1000"],
            figures["stsrelay", "cpu_per_1000"] / figures["postfix", "cpu_per_1000"],
            figures["stsrelay", "p99_ms"], figures["postfix", "p99_ms"],
            handshakes("stsrelay"), handshakes("postfix")))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--build", required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the message counts (0.1 for a quick look)")
    parser.add_argument("--rows", default="", help="only rows whose name contains this, e.g. '4KiB 50 many'")
    parser.add_argument("--systems", default="stsrelay,postfix")
    parser.add_argument("--out", default="", help="also write every run's figures here as JSON")
    parser.add_argument("--idle-sessions", type=int, default=1000)
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="stsrelay-bench-")
    os.chmod(work, 0o711)  # Postfix's daemons, as user postfix, reach their queue inside
    tools = args.build + "/bench"
    destination = Destination(work, args.build)
    try:
        destination.start()
        print("stsrelay side-by-side benchmark, %s, %s" % (time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                                         machine_description()))
        machine_limits(tools, work)
        compare_sinks(destination, work, max(100, int(20000 * args.scale)))
        classes = {"stsrelay": Stsrelay, "postfix": Postfix}
        systems = [classes[name](work, args.build, destination.ca_file) for name in args.systems.split(",")]
        if args.idle_sessions > 0 and any(s.name == "stsrelay" for s in systems):
            idle, loaded = memory_figures(Stsrelay(work, args.build, destination.ca_file), tools, work,
                                          args.idle_sessions)
            print("stsrelay RSS: %.1f MiB idle, %.1f MiB with %d idle inbound sessions (%.1f KiB per session)" %
                  (idle / 1024, loaded / 1024, args.idle_sessions, (loaded - idle) / args.idle_sessions))
        rows = []
        for label, size, count in SIZES:
            for sessions in SESSIONS:
                for reuse_label, reuse in REUSE:
                    name = "%s %d %s" % (label, sessions, "many" if reuse else "one")
                    if all(word in name.split() for word in args.rows.split()):
                        rows.append((label, size, max(1, int(count * args.scale)), sessions, reuse))
        results = []
        for row in rows:
            for run_index in range(1, args.runs + 1):
                for system in systems:  # alternated, so both see the same machine
                    result = measure(system, destination, tools, work, row, run_index)
                    results.append(result)
                    print("%s %s %d sessions %s run %d: %.0f msgs/s, %.2f CPU s/1000, p99 %.1f ms" %
                          (system.name, row[0], row[3], "many/session" if row[4] else "1/session", run_index,
                           result["throughput"], result["cpu_per_1000"], result["p99_ms"]),
                          file=sys.stderr, flush=True)
                    if args.out:
                        with open(args.out, "w") as f:
                            json.dump(results, f, indent=1)
        print_summary(results, [s.name for s in systems])
        print_table(results, [s.name for s in systems])
    finally:
        destination.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
