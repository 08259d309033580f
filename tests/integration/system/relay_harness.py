"""Starts the real stsrelay binary on loopback and drives it through its
external contract (SPEC.md): the config file, the stderr event log, SMTP on
the wire, the CLI and the queue database.

Shared by tests/integration/system and tests/interop. Standard library only.
"""

import argparse
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import unittest

# Generous enough for a sanitizer build on a loaded two-core machine; every
# wait below returns as soon as its condition holds, so it costs nothing when
# things go well.
START_TIMEOUT = 30.0
EVENT_TIMEOUT = 30.0
EXIT_TIMEOUT = 30.0
CLI_TIMEOUT = 60.0

QUEUE_ID_PATTERN = r"[0-9A-HJKMNP-TV-Z]{12}"
QUEUED_AS = re.compile(rb"queued as (" + QUEUE_ID_PATTERN.encode() + rb")")

STSRELAY = None  # set by main() from --stsrelay


def free_port(host="127.0.0.1"):
    """A port that was free a moment ago; callers retry if it is taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        # JSON string escapes are valid TOML basic-string escapes.
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise TypeError("no TOML form for %r" % (value,))


def toml_text(config):
    """CONFIG maps top-level keys to values and section names to dicts."""
    lines = []
    for key, value in config.items():
        if not isinstance(value, dict):
            lines.append("%s = %s" % (key, toml_value(value)))
    for section, table in config.items():
        if isinstance(table, dict):
            lines.append("")
            lines.append("[%s]" % section)
            for key, value in table.items():
                lines.append("%s = %s" % (key, toml_value(value)))
    return "\n".join(lines) + "\n"


def queue_id_from_reply(reply):
    """The queue id in a "250 2.0.0 Ok: queued as <ID>" reply text."""
    if isinstance(reply, str):
        reply = reply.encode()
    match = QUEUED_AS.search(reply)
    return match.group(1).decode() if match else None


def bare_address(path):
    """"<a@b>" and "a@b" both become "a@b" (the JSON output may use either)."""
    if path.startswith("<") and path.endswith(">"):
        return path[1:-1]
    return path


class RelayExited(Exception):
    pass


class Relay:
    """One stsrelay daemon with its own temp dir, config, spool and port.

    Use as a context manager: on exit the daemon is killed by pid if it is
    still running and the temp dir is removed, whatever the test did.
    """

    def __init__(self, config_overrides=None, directory=None):
        self._own_directory = directory is None
        self._tempdir = tempfile.TemporaryDirectory(prefix="stsrelay-test-") if directory is None else None
        self.directory = self._tempdir.name if directory is None else directory
        self.config_path = os.path.join(self.directory, "stsrelay.toml")
        self.spool = os.path.join(self.directory, "spool")
        self.host = "127.0.0.1"
        self.port = None
        self.overrides = config_overrides or {}
        self.process = None
        self.events = []  # parsed JSON log lines of the current process
        self.raw_log = []  # every stderr line of every process, for failure messages
        self.all_events = []  # parsed JSON log lines of every process
        self._condition = threading.Condition()
        self._reader = None
        # A resolver that never answers: the delivery engine's first attempt
        # at each message waits on DNS for as long as a test runs, so the
        # accepting side can be checked with the mail still queued. Tests of
        # delivery override [dns] with a real (fake) server.
        self._silent_dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._silent_dns.bind(("127.0.0.1", 0))

    # -- config -----------------------------------------------------------

    def config(self, port):
        config = {
            "hostname": "relay.test",
            "listen": {
                "addresses": ["%s:%d" % (self.host, port)],
                "allowed_networks": ["127.0.0.0/8"],
            },
            "queue": {"directory": self.spool},
            "sts": {"cache_file": os.path.join(self.directory, "sts-cache")},
            "dns": {"servers": ["127.0.0.1:%d" % self._silent_dns.getsockname()[1]], "timeout": "1h"},
            "log": {"format": "json"},
        }
        for key, value in self.overrides.items():
            if isinstance(value, dict):
                config.setdefault(key, {}).update(value)
            else:
                config[key] = value
        return config

    def write_config(self, port):
        with open(self.config_path, "w", encoding="utf-8") as out:
            out.write(toml_text(self.config(port)))

    # -- process ----------------------------------------------------------

    def start(self, port=None, attempts=5):
        """Starts `stsrelay run` and waits for its `started` event.

        Picks a free port unless PORT is given; if the relay exits before it
        has started (the port was taken meanwhile), tries another port.
        """
        last_error = None
        for _ in range(attempts):
            chosen = port if port is not None else free_port(self.host)
            self.write_config(chosen)
            self._spawn()
            try:
                started = self.wait_for_event("started", timeout=START_TIMEOUT)
            except RelayExited as error:
                last_error = error
                if port is not None:
                    break
                continue
            self.port = chosen
            listen = started.get("listen")
            if not isinstance(listen, list) or "%s:%d" % (self.host, chosen) not in listen:
                raise AssertionError("started event does not list %s:%d: %r" % (self.host, chosen, started))
            return started
        raise AssertionError("stsrelay did not start: %s\n%s" % (last_error, self.log_text()))

    def _spawn(self):
        if self.process is not None:
            self.kill()
            self.process.stderr.close()
        self.events = []
        self.process = subprocess.Popen(
            [STSRELAY, "run", "--config", self.config_path],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._reader = threading.Thread(target=self._read_log, args=(self.process,), daemon=True)
        self._reader.start()

    def _read_log(self, process):
        for line in process.stderr:
            text = line.decode("utf-8", "replace").rstrip("\n")
            with self._condition:
                self.raw_log.append(text)
                try:
                    event = json.loads(text)
                except ValueError:
                    event = None
                if process is self.process:
                    if isinstance(event, dict):
                        self.events.append(event)
                if isinstance(event, dict):
                    self.all_events.append(event)
                self._condition.notify_all()
        with self._condition:
            self._condition.notify_all()

    def wait_for_event(self, name, timeout=EVENT_TIMEOUT, predicate=None):
        """The first logged event NAME (matching PREDICATE) of this process."""
        deadline = time.monotonic() + timeout
        process = self.process
        with self._condition:
            while True:
                for event in self.events:
                    if event.get("event") == name and (predicate is None or predicate(event)):
                        return event
                if process.poll() is not None and not self._reader.is_alive():
                    raise RelayExited("stsrelay exited with %s before logging %r" % (process.returncode, name))
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError("no %r event within %.0fs\n%s" % (name, timeout, self.log_text()))
                self._condition.wait(min(remaining, 0.2))

    def events_named(self, name):
        with self._condition:
            return [event for event in self.events if event.get("event") == name]

    def log_text(self):
        with self._condition:
            return "--- stsrelay stderr ---\n" + "\n".join(self.raw_log[-200:])

    def problems(self):
        """Log lines that mean a bug whatever the test did: sanitizer reports,
        error or critical events, and lines that are not JSON."""
        with self._condition:
            bad = [line for line in self.raw_log
                   if "Sanitizer" in line or "runtime error:" in line or not line.startswith("{")]
            bad += [json.dumps(event) for event in self.all_events
                    if event.get("level") in ("error", "err", "critical")]
            return bad

    def signal(self, signum):
        self.process.send_signal(signum)

    def wait_exit(self, timeout=EXIT_TIMEOUT):
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("stsrelay still running %.0fs after the signal\n%s" % (timeout, self.log_text()))
        self._reader.join(timeout=EXIT_TIMEOUT)
        return code

    def kill(self):
        """SIGKILL, as a crash would; returns once the process is gone."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        if self.process is not None:
            self.process.wait()
            if self._reader is not None:
                self._reader.join(timeout=EXIT_TIMEOUT)

    def stop(self):
        """SIGTERM and wait; returns the exit status."""
        self.signal(signal.SIGTERM)
        return self.wait_exit()

    def stop_and_check(self):
        """SIGTERM and wait; fails unless the relay exits 0 (also when it had
        already exited) without problems logged."""
        status = self.stop()
        problems = self.problems()
        if status != 0 or problems:
            raise AssertionError("stsrelay exit status %d, problems logged:\n%s"
                                 % (status, "\n".join(problems[:50])))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self):
        try:
            self.kill()
        finally:
            if self.process is not None:
                self.process.stderr.close()
            self._silent_dns.close()
            if self._tempdir is not None:
                self._tempdir.cleanup()

    # -- CLI and queue ----------------------------------------------------

    def cli(self, *args):
        """Runs `stsrelay ARGS --config FILE`; returns the CompletedProcess."""
        if not os.path.exists(self.config_path):
            self.write_config(self.port or free_port(self.host))
        return subprocess.run(
            [STSRELAY, *args, "--config", self.config_path],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=CLI_TIMEOUT,
        )

    def queue_list(self):
        result = self.cli("queue", "list", "--json")
        if result.returncode != 0:
            raise AssertionError(
                "queue list --json exited %d: %s" % (result.returncode, result.stderr.decode(errors="replace"))
            )
        try:
            listing = json.loads(result.stdout)
        except ValueError as error:
            raise AssertionError("queue list --json printed no JSON (%s): %r" % (error, result.stdout[:2000]))
        if not isinstance(listing, list):
            raise AssertionError("queue list --json is not an array: %r" % (listing,))
        return listing

    def queue_entry(self, queue_id):
        for entry in self.queue_list():
            if entry.get("id") == queue_id:
                return entry
        return None

    def database(self):
        """A read-only connection to the queue database (WAL readers never block the writer)."""
        path = os.path.join(self.spool, "queue.db")
        if not os.path.exists(path):
            raise AssertionError("no queue database at %s" % path)
        connection = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=10)
        return connection

    def stored_contents(self):
        """{id: content bytes} of every message in the queue database."""
        connection = self.database()
        try:
            return {row[0]: bytes(row[1]) for row in connection.execute("SELECT id, content FROM messages")}
        finally:
            connection.close()

    def stored_content(self, queue_id):
        return self.stored_contents().get(queue_id)


def smtp_raw(host, port, timeout=10.0):
    """A plain socket to the relay, for exchanges smtplib would not make."""
    return RawSmtp(socket.create_connection((host, port), timeout=timeout))


class RawSmtp:
    def __init__(self, sock):
        self.sock = sock
        self.buffer = b""

    def send(self, data):
        self.sock.sendall(data)

    def reply(self):
        """One whole (possibly multiline) reply as (code, [lines]); (None, []) at EOF."""
        lines = []
        while True:
            while b"\r\n" not in self.buffer:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return (None, lines)
                self.buffer += chunk
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            lines.append(line)
            if len(line) < 4 or line[3:4] != b"-":
                return (int(line[:3]), lines)

    def command(self, line):
        self.send(line + b"\r\n")
        return self.reply()

    def close(self):
        self.sock.close()


def main():
    """Parses --stsrelay, then runs unittest on the caller's module."""
    global STSRELAY
    parser = argparse.ArgumentParser()
    parser.add_argument("--stsrelay", required=True, help="path to the stsrelay binary")
    args, rest = parser.parse_known_args()
    STSRELAY = os.path.abspath(args.stsrelay)
    if not os.access(STSRELAY, os.X_OK):
        sys.exit("not an executable: %s" % STSRELAY)
    unittest.main(argv=[sys.argv[0], *rest], verbosity=2)
