"""A private Postfix instance for the interop tests: its own config directory
(`postfix -c DIR`), queue and data directories under a temporary directory,
every service outside a chroot, one smtpd listening on a given
127.0.0.x:port through master.cf, and its log in a file (maillog_file and
the postlog service), since no syslog runs here.

Started and stopped with `postfix -c DIR start|stop`; stop() waits until the
master has gone and is safe to call more than once, also after a failed
start. Standard library only.
"""

import concurrent.futures
import os
import pwd
import shlex
import signal
import socket
import subprocess
import time

from peers import COMMAND_TIMEOUT, STARTUP_TIMEOUT, program, write

STOP_TIMEOUT = 20  # seconds for the master and its children to exit


class PostfixInstance:
    """One Postfix instance in DIRECTORY whose smtpd listens on ADDRESS:PORT
    and calls itself HOSTNAME. MAIN: main.cf parameters (name -> value) over
    the defaults in main_cf()."""

    def __init__(self, directory, name, address, port, hostname, main=None):
        self.directory = directory
        self.name = name
        self.address = address
        self.port = port
        self.hostname = hostname
        self.config_directory = os.path.join(directory, "conf")
        self.queue_directory = os.path.join(directory, "spool")
        self.data_directory = os.path.join(directory, "data")
        self.maillog = os.path.join(directory, "maillog")
        self.main = dict(main or {})
        self.master_pid = None
        self.started = False

    # -- configuration -----------------------------------------------------

    def main_cf(self):
        parameters = {
            "compatibility_level": "3.6",
            "queue_directory": self.queue_directory,
            "data_directory": self.data_directory,
            "mail_owner": "postfix",
            "maillog_file": self.maillog,
            # A log file outside /var must be allowed by its prefix.
            "maillog_file_prefixes": self.directory,
            "myhostname": self.hostname,
            "mydomain": self.hostname.partition(".")[2] or "test",
            "myorigin": "$myhostname",
            "mydestination": "",
            "local_transport": "error:no local delivery",
            "alias_maps": "",
            "alias_database": "",
            # Addresses an interface has; the listener's own address is in master.cf.
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            # No reverse DNS of the clients: there is no resolver to ask.
            "smtpd_peername_lookup": "no",
            "smtp_dns_support_level": "disabled",
            "biff": "no",
            "smtputf8_enable": "no",
            "smtpd_tls_security_level": "none",
            "smtp_tls_security_level": "none",
            "smtpd_tls_received_header": "yes",
            "smtpd_tls_loglevel": "1",
            "smtp_tls_loglevel": "1",
            "delay_warning_time": "0",
            "bounce_queue_lifetime": "1h",
            "maximal_queue_lifetime": "1h",
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
        }
        parameters.update(self.main)
        return "".join("%s = %s\n" % (key, value) for key, value in parameters.items())

    def master_cf(self):
        listener = "%s:%d inet n - n - - smtpd" % (self.address, self.port)
        # Debian's master.cf, less what needs a chroot or is never used here.
        return listener + "\n" + "\n".join([
            "pickup unix n - n 60 1 pickup",
            "cleanup unix n - n - 0 cleanup",
            "qmgr unix n - n 300 1 qmgr",
            "tlsmgr unix - - n 1000? 1 tlsmgr",
            "rewrite unix - - n - - trivial-rewrite",
            "bounce unix - - n - 0 bounce",
            "defer unix - - n - 0 bounce",
            "trace unix - - n - 0 bounce",
            "verify unix - - n - 1 verify",
            "flush unix n - n 1000? 0 flush",
            "proxymap unix - - n - - proxymap",
            "proxywrite unix - - n - 1 proxymap",
            "smtp unix - - n - - smtp",
            "relay unix - - n - - smtp",
            "showq unix n - n - - showq",
            "error unix - - n - - error",
            "retry unix - - n - - error",
            "discard unix - - n - - discard",
            "local unix - n n - - local",
            "virtual unix - n n - - virtual",
            "lmtp unix - - n - - lmtp",
            "anvil unix - - n - 1 anvil",
            "scache unix - - n - 1 scache",
            "postlog unix-dgram n - n - 1 postlogd",
        ]) + "\n"

    def write_config(self):
        write(os.path.join(self.config_directory, "main.cf"), self.main_cf())
        write(os.path.join(self.config_directory, "master.cf"), self.master_cf())
        os.makedirs(self.queue_directory, exist_ok=True)
        os.makedirs(self.data_directory, exist_ok=True)
        postfix = pwd.getpwnam("postfix")
        os.chown(self.data_directory, postfix.pw_uid, postfix.pw_gid)
        # Postfix's daemons, as user postfix, reach their queue inside.
        os.chmod(self.directory, 0o755)

    # -- process -----------------------------------------------------------

    def postfix(self, *args):
        """`postfix -c DIR ARGS` under a pseudo-terminal: Postfix says why it
        fails only to a terminal."""
        command = " ".join(shlex.quote(word) for word in [program("postfix"), "-c", self.config_directory, *args])
        return subprocess.run(["script", "-qec", command, "/dev/null"], stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=COMMAND_TIMEOUT)

    def start(self):
        """Writes the config, starts the instance and waits until its smtpd
        accepts connections; fails with Postfix's own words otherwise."""
        self.write_config()
        self.started = True  # from here on stop() has something to do
        # `start` checks the configuration itself (check-fatal); a full
        # `postfix check` would add seconds per instance.
        result = self.postfix("start")
        if result.returncode != 0:
            raise AssertionError("postfix -c %s start failed (%d):\n%s%s\n%s"
                                 % (self.config_directory, result.returncode, result.stdout.decode(errors="replace"),
                                    result.stderr.decode(errors="replace"), self.log_text()))
        self.master_pid = self.read_master_pid()
        self.wait_listening()

    def read_master_pid(self):
        path = os.path.join(self.queue_directory, "pid", "master.pid")
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            try:
                with open(path) as pid_file:
                    text = pid_file.read().strip()  # written with leading spaces
                if text:
                    return int(text)
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError("%s: no master.pid after %ds\n%s" % (self.name, STARTUP_TIMEOUT,
                                                                         self.log_text()))
            time.sleep(0.05)  # polling a file Postfix writes

    def wait_listening(self):
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if not self.master_alive():
                raise AssertionError("%s: master exited before listening\n%s" % (self.name, self.log_text()))
            try:
                with socket.create_connection((self.address, self.port), timeout=1):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("%s is not listening on %s:%d after %ds\n%s"
                                     % (self.name, self.address, self.port, STARTUP_TIMEOUT, self.log_text()))
            time.sleep(0.05)

    def master_alive(self):
        if self.master_pid is None:
            return False
        try:
            os.kill(self.master_pid, 0)
        except ProcessLookupError:
            return False
        # A zombie is gone for our purposes (the master is not our child,
        # but guard anyway).
        try:
            with open("/proc/%d/stat" % self.master_pid) as stat:
                return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    def stop(self):
        """`postfix -c DIR stop`, then waits for the master to exit; kills it
        (and so its children, which exit when their master goes) if it does
        not. Safe to call twice and after a failed start."""
        if not self.started:
            return
        self.started = False
        if self.master_pid is None:  # a start that failed half-way
            try:
                with open(os.path.join(self.queue_directory, "pid", "master.pid")) as pid_file:
                    self.master_pid = int(pid_file.read().strip())
            except (OSError, ValueError):
                self.master_pid = None
        try:
            self.postfix("stop")
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + STOP_TIMEOUT
        while self.master_alive():
            if time.monotonic() > deadline:
                try:
                    os.kill(self.master_pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                break
            time.sleep(0.05)  # the master is not our child: poll for it
        self.master_pid = None

    # -- what it did -------------------------------------------------------

    def log_text(self, tail=6000):
        try:
            with open(self.maillog, "rb") as log:
                return "--- %s maillog ---\n%s" % (self.name, log.read()[-tail:].decode(errors="replace"))
        except OSError:
            return "--- %s: no maillog ---" % self.name

    def log_lines(self):
        try:
            with open(self.maillog, "rb") as log:
                return log.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return []

    def sendmail(self, sender, recipients, message):
        """Postfix's own sendmail(1) with this instance's config (-C DIR):
        the message goes through postdrop and pickup."""
        result = subprocess.run([program("sendmail"), "-C", self.config_directory, "-i", "-f", sender, "--",
                                 *recipients], input=message, capture_output=True, timeout=COMMAND_TIMEOUT)
        if result.returncode != 0:
            raise AssertionError("sendmail -C %s failed (%d):\n%s%s\n%s"
                                 % (self.config_directory, result.returncode, result.stdout.decode(errors="replace"),
                                    result.stderr.decode(errors="replace"), self.log_text()))

    def queue_is_empty(self):
        for sub in ("maildrop", "incoming", "active", "deferred", "hold"):
            for _, _, files in os.walk(os.path.join(self.queue_directory, sub)):
                if files:
                    return False
        return True


def start_all(instances):
    """Starts INSTANCES side by side (each `postfix start` spends most of its
    time setting up a new queue directory); raises the first failure once
    every start has ended."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(instances) or 1) as pool:
        futures = [pool.submit(instance.start) for instance in instances]
    for future in futures:
        future.result()
