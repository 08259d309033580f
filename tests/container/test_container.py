"""Container: the image of deploy/Dockerfile, built and run with podman,
relays mail to a domain with an enforce MTA-STS policy.

The peers are real programs from Debian's packages on the host's loopback
(tests/interop/peers.py): unbound serves the zone (MX, A and the _mta-sts
TXT record), nginx serves the enforce policy over HTTPS and aiosmtpd
(recording_handler.py) is the MX host, with STARTTLS certificates from a test
CA. The container shares the host's network (--network=host), so the relay
inside reaches them; its mounted config binds it to a free loopback port and
points DNS, the MX port, the policy port and the trust store at the peers.

Checked: swaks submits a message that the MX receives over TLS; the
container's JSON log says `sent` with policy_mode=enforce and
verification=valid; the relay runs as the unprivileged user of the image;
the image's HEALTHCHECK passes; `podman stop` (SIGTERM) ends it with exit
status 0 and a `stopped` event. Then the image's own config in a network of
its own (--network=none), with a read-only root and every capability dropped
but NET_BIND_SERVICE: it binds port 25 as that user and `stsrelay health`
answers.

podman is set up as ../../../shared/ENVIRONMENT.md describes (runc, no
default ulimits, cgroupfs); a missing Debian base image is made with
mmdebstrap and `podman import`. Everything the test creates (containers, the
image, the volume, the peers, its temp dir) is removed, also on failure.
When podman cannot run on this machine the test says why and exits with
SKIP_CODE, which ctest reports as skipped.

Run: /usr/bin/python3 -B test_container.py --source-dir REPO
"""

import argparse
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "interop"))

from peers import Peers, TestCa, free_port, policy_site, require_programs, subject_of, wait_until  # noqa: E402

SKIP_CODE = 77  # SKIP_RETURN_CODE in CMakeLists.txt

BASE_IMAGE = "docker.io/library/debian:bookworm-slim"
BUILD_TIMEOUT = 1800  # compiles stsrelay inside the build stage
PODMAN_TIMEOUT = 120
SWAKS_TIMEOUT = 60
EVENT_TIMEOUT = 60
IMAGE_UID = 2525  # the stsrelay user of deploy/Dockerfile

DNS_ADDRESS = "127.0.0.40"
POLICY_ADDRESS = "127.0.0.41"
MX_ADDRESS = "127.0.0.42"
RELAY_ADDRESS = "127.0.0.43"

DOMAIN = "container-enforce.test"
MX_NAME = "mx.container-enforce.test"
POLICY_ID = "20240601"
SENDER = "app@client.test"
RECIPIENT = "rcpt@" + DOMAIN

IN_CONTAINER_CONFIG = "/etc/stsrelay/stsrelay.toml"
IN_CONTAINER_CA = "/etc/stsrelay/test-ca.pem"
IN_CONTAINER_SPOOL = "/var/spool/stsrelay"


class Skip(Exception):
    """podman cannot run here: the test is skipped, saying why."""


class Podman:
    """The podman command as ENVIRONMENT.md sets it up, and what this run made."""

    def __init__(self, directory):
        self.conf = os.path.join(directory, "containers.conf")
        with open(self.conf, "w") as out:
            out.write('[containers]\ndefault_ulimits = []\n[engine]\ncgroup_manager = "cgroupfs"\n')
        self.env = dict(os.environ, CONTAINERS_CONF=self.conf)
        self.containers = []
        self.images = []
        self.volumes = []

    def run(self, *args, timeout=PODMAN_TIMEOUT, check=True, log=None):
        command = ["podman", "--runtime", "runc", *args]
        if log is not None:
            with open(log, "wb") as out:
                result = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                        env=self.env, timeout=timeout)
            result.stdout, result.stderr = b"", b""
        else:
            result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, env=self.env,
                                    timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError("%s exited with %d:\n%s%s%s" % (
                " ".join(command), result.returncode, result.stdout.decode(errors="replace"),
                result.stderr.decode(errors="replace"), tail_of(log) if log else ""))
        return result

    def text(self, *args, **kwargs):
        return self.run(*args, **kwargs).stdout.decode(errors="replace").strip()

    def cleanup(self):
        """Removes every container, image and volume this run made; reports what it could not."""
        problems = []
        for kind, names, command in (("container", self.containers, ["rm", "--force", "--volumes"]),
                                     ("image", self.images, ["rmi", "--force"]),
                                     ("volume", self.volumes, ["volume", "rm", "--force"])):
            for name in reversed(names):
                try:
                    result = self.run(*command, name, check=False)
                    if result.returncode != 0:
                        problems.append("%s %s: %s" % (kind, name, result.stderr.decode(errors="replace").strip()))
                except (OSError, subprocess.TimeoutExpired) as error:
                    problems.append("%s %s: %s" % (kind, name, error))
            names.clear()
        return problems


def tail_of(path, size=6000):
    try:
        with open(path, "rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - size))
            return log.read().decode(errors="replace")
    except OSError:
        return "(no log)"


def check_podman_runs(podman, directory, unique):
    """Raises Skip when podman or runc is missing, `podman info` fails, or
    podman cannot store an image."""
    for name in ("podman", "runc"):
        if shutil.which(name) is None and not os.path.exists("/usr/sbin/" + name):
            raise Skip("%s is not installed (deploy/debian.sh test installs podman, runc and mmdebstrap)" % name)
    try:
        result = podman.run("info", check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise Skip("podman info failed: %s" % error)
    if result.returncode != 0:
        raise Skip("podman info failed (%d): %s" % (result.returncode, result.stderr.decode(errors="replace")))
    # `podman info` also answers where no image can be stored (inside another
    # container, whose overlayfs podman's overlay driver cannot sit on): store
    # an empty one and remove it.
    empty = os.path.join(directory, "empty.tar")
    subprocess.run(["tar", "-cf", empty, "--files-from", "/dev/null"], check=True, timeout=60)
    probe = "localhost/stsrelay-probe:" + unique
    stored = podman.run("import", empty, probe, check=False)
    os.remove(empty)
    if stored.returncode != 0:
        raise Skip("podman cannot store an image: %s" % stored.stderr.decode(errors="replace").strip())
    podman.run("rmi", "--force", probe, check=False)


def ensure_base_image(podman, directory):
    """No image registry is reachable here: make the Debian base image once,
    as ENVIRONMENT.md does. It stays for the next builds."""
    if podman.run("image", "exists", BASE_IMAGE, check=False).returncode == 0:
        return
    if shutil.which("mmdebstrap") is None:
        raise AssertionError("%s is missing and mmdebstrap is not installed to make it "
                             "(see deploy/debian.sh test_packages)" % BASE_IMAGE)
    rootfs = os.path.join(directory, "rootfs.tar")
    log = os.path.join(directory, "mmdebstrap.log")
    print("container: making %s with mmdebstrap" % BASE_IMAGE, flush=True)
    with open(log, "wb") as out:
        result = subprocess.run(["mmdebstrap", "--variant=minbase", "bookworm", rootfs], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT)
    if result.returncode != 0:
        raise AssertionError("mmdebstrap failed (%d):\n%s" % (result.returncode, tail_of(log)))
    podman.run("import", rootfs, BASE_IMAGE, timeout=600)
    os.remove(rootfs)


def build_image(podman, source_dir, tag, directory):
    log = os.path.join(directory, "build.log")
    started = time.monotonic()
    # --format docker: the OCI image format has no HEALTHCHECK. --layers=false:
    # no intermediate images are left behind.
    podman.images.append(tag)
    podman.run("build", "--pull=never", "--network=host", "--format", "docker", "--layers=false",
               "-t", tag, "-f", os.path.join(source_dir, "deploy", "Dockerfile"), source_dir,
               timeout=BUILD_TIMEOUT, log=log)
    print("container: built %s in %.0f s" % (tag, time.monotonic() - started), flush=True)


# -- the peers --------------------------------------------------------------

def zone_records():
    return [
        "%s. 300 IN MX 10 %s." % (DOMAIN, MX_NAME),
        "%s. 300 IN A %s" % (MX_NAME, MX_ADDRESS),
        "mta-sts.%s. 300 IN A %s" % (DOMAIN, POLICY_ADDRESS),
        '_mta-sts.%s. 300 IN TXT "v=STSv1; id=%s"' % (DOMAIN, POLICY_ID),
    ]


def policy_text():
    return "version: STSv1\nmode: enforce\nmx: %s\nmax_age: 86400\n" % MX_NAME


def start_peers(peers, directory):
    """Starts unbound, nginx and the MX; returns (ca file, dns port, policy port, mx port, mx directory)."""
    ca = TestCa(os.path.join(directory, "ca"))
    os.chmod(ca.cert, 0o644)  # mounted into the container, read by its unprivileged user
    dns_port = peers.start_unbound(DNS_ADDRESS, zone_records())
    policy_cert, policy_key = ca.issue("mta-sts", ["mta-sts." + DOMAIN])
    policy_port = peers.start_nginx(POLICY_ADDRESS, policy_cert, policy_key,
                                    [policy_site(directory, DOMAIN, policy_text())])
    mx_port = free_port(MX_ADDRESS)
    mx_cert, mx_key = ca.issue("mx", [MX_NAME])
    mx_directory = os.path.join(directory, "mx")
    peers.start_aiosmtpd("mx", MX_ADDRESS, mx_port, mx_cert, mx_key, handler="recording_handler.Recorder",
                         handler_args=[mx_directory, "--name", MX_NAME],
                         pythonpath=os.path.join(HERE, "..", "interop"))
    return ca.cert, dns_port, policy_port, mx_port, mx_directory


def relay_config(relay_port, dns_port, policy_port, mx_port):
    return textwrap.dedent("""\
        hostname = "relay.client.test"

        [listen]
        addresses = ["{relay}:{relay_port}"]
        allowed_networks = ["127.0.0.0/8"]

        [queue]
        directory = "{spool}"
        retry_min = "1s"
        retry_max = "2s"

        [delivery]
        port = {mx_port}
        ca_file = "{ca}"
        connect_timeout = "10s"
        command_timeout = "30s"

        [dns]
        servers = ["{dns}:{dns_port}"]
        timeout = "5s"

        [sts]
        cache_file = "{spool}/sts-cache"
        policy_port = {policy_port}
        fetch_timeout = "10s"

        [log]
        format = "json"
        """).format(relay=RELAY_ADDRESS, relay_port=relay_port, spool=IN_CONTAINER_SPOOL, mx_port=mx_port,
                    ca=IN_CONTAINER_CA, dns=DNS_ADDRESS, dns_port=dns_port, policy_port=policy_port)


# -- the container's log ----------------------------------------------------

def events_of(podman, container):
    """The container's JSON log lines (stderr), parsed; other lines as {"line": text}."""
    result = podman.run("logs", container, check=False)
    events = []
    for line in (result.stdout + result.stderr).decode(errors="replace").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            event = json.loads(line)
        except ValueError:
            event = None
        events.append(event if isinstance(event, dict) else {"line": line})
    return events


def log_text(podman, container):
    result = podman.run("logs", container, check=False)
    return (result.stdout + result.stderr).decode(errors="replace")[-8000:]


def wait_for_event(podman, container, name, predicate=lambda event: True):
    def find():
        for event in events_of(podman, container):
            if event.get("event") == name and predicate(event):
                return event
        return None
    return wait_until(find, "the %r event of container %s" % (name, container), timeout=EVENT_TIMEOUT,
                      details=lambda: log_text(podman, container))


def wait_for_exit(podman, container):
    """The container's exit status, once it has exited."""
    codes = []

    def exited():
        status, code = podman.text("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}",
                                   container).split()
        if status in ("exited", "stopped"):
            codes.append(int(code))
            return True
        return False
    wait_until(exited, "container %s to exit" % container)
    return codes[-1]


def problems_in(events):
    return [json.dumps(event) for event in events
            if "line" in event or event.get("level") in ("error", "err", "critical")]


def process_uid(podman, container):
    status = podman.text("exec", container, "cat", "/proc/1/status")
    match = re.search(r"^Uid:\s+(\d+)\s+(\d+)", status, re.MULTILINE)
    if match is None:
        raise AssertionError("no Uid line in the relay's /proc/1/status:\n" + status)
    return int(match.group(2))


# -- the checks ---------------------------------------------------------------

def check_relays_under_enforce(podman, tag, unique, directory, peers):
    ca_file, dns_port, policy_port, mx_port, mx_directory = start_peers(peers, directory)
    relay_port = free_port(RELAY_ADDRESS)
    config = os.path.join(directory, "stsrelay.toml")
    with open(config, "w") as out:
        out.write(relay_config(relay_port, dns_port, policy_port, mx_port))
    os.chmod(config, 0o644)

    volume = "stsrelay-test-spool-" + unique
    podman.volumes.append(volume)
    podman.run("volume", "create", volume)
    container = "stsrelay-test-" + unique
    podman.containers.append(container)
    # --health-interval=disable: no timer for the periodic check (there is no
    # systemd here); `podman healthcheck run` below runs the image's check.
    podman.run("run", "--detach", "--name", container, "--network=host", "--health-interval=disable",
               "--volume", "%s:%s" % (volume, IN_CONTAINER_SPOOL),
               "--volume", "%s:%s:ro" % (config, IN_CONTAINER_CONFIG),
               "--volume", "%s:%s:ro" % (ca_file, IN_CONTAINER_CA),
               tag)
    started = wait_for_event(podman, container, "started")
    assert started.get("listen") == ["%s:%d" % (RELAY_ADDRESS, relay_port)], started
    uid = process_uid(podman, container)
    assert uid == IMAGE_UID, "the relay runs as uid %d, not as the image's stsrelay user (%d)" % (uid, IMAGE_UID)

    subject = "through the container " + unique
    result = subprocess.run(["swaks", "--server", RELAY_ADDRESS, "--port", str(relay_port), "--helo", "client.test",
                             "--from", SENDER, "--to", RECIPIENT, "--header", "Subject: " + subject,
                             "--body", "body of " + subject],
                            stdin=subprocess.DEVNULL, capture_output=True, timeout=SWAKS_TIMEOUT)
    transcript = (result.stdout + result.stderr).decode(errors="replace")
    assert result.returncode == 0, "swaks failed:\n%s\n%s" % (transcript, log_text(podman, container))
    ids = re.findall(r"<[-~]\s+250 2\.0\.0 Ok: queued as (\S+)", transcript)
    assert len(ids) == 1, "no 'queued as' in the swaks transcript:\n" + transcript
    queue_id = ids[0]

    sent = wait_for_event(podman, container, "sent", lambda event: event.get("queue_id") == queue_id)
    for key, expected in (("policy_mode", "enforce"), ("policy_id", POLICY_ID), ("verification", "valid"),
                          ("mx", MX_NAME), ("ip", MX_ADDRESS), ("domain", DOMAIN),
                          ("recipients", ["<%s>" % RECIPIENT])):
        assert sent.get(key) == expected, "sent event: %s is %r, not %r: %s" % (key, sent.get(key), expected, sent)
    assert sent.get("tls_version") in ("TLSv1.2", "TLSv1.3"), sent

    def received():
        if not os.path.isdir(mx_directory):
            return []
        records = []
        for name in sorted(os.listdir(mx_directory)):
            if name.endswith(".json"):
                with open(os.path.join(mx_directory, name)) as record:
                    records.append(json.load(record))
        return records
    [message] = wait_until(received, "the MX to record the message")
    data = base64.b64decode(message["data"])
    assert subject_of(data) == subject, message
    assert message["mail_from"] == SENDER and message["rcpt_tos"] == [RECIPIENT], message
    assert message["tls"] is True and message["tls_version"] == sent["tls_version"], message
    assert data.startswith(b"Received: from "), data[:200]

    health = podman.run("healthcheck", "run", container, check=False)
    assert health.returncode == 0, "podman healthcheck run exited %d: %s%s" % (
        health.returncode, health.stdout.decode(errors="replace"), health.stderr.decode(errors="replace"))

    podman.run("stop", "--time", "60", container, timeout=PODMAN_TIMEOUT)
    code = wait_for_exit(podman, container)
    events = events_of(podman, container)
    assert code == 0, "exit status %d after SIGTERM:\n%s" % (code, log_text(podman, container))
    stopping = [event for event in events if event.get("event") == "stopping"]
    assert stopping and stopping[0].get("signal") == "SIGTERM", "no stopping event for SIGTERM:\n%s" % (
        log_text(podman, container))
    assert any(event.get("event") == "stopped" for event in events), "no stopped event:\n" + log_text(podman,
                                                                                                     container)
    problems = problems_in(events)
    assert not problems, "problems in the container's log:\n" + "\n".join(problems[:50])
    peers.check_alive()
    print("container: %s sent %s to %s over %s under enforce; healthy; stopped cleanly"
          % (container, queue_id, MX_NAME, sent["tls_version"]), flush=True)


def check_default_config(podman, tag, unique):
    """The image as shipped: port 25 on all addresses, as the unprivileged user."""
    container = "stsrelay-test-default-" + unique
    podman.containers.append(container)
    # A network namespace of its own with only loopback: port 25 is free
    # there. Hardened as in production: a read-only root and no capability
    # but the one the binary carries.
    podman.run("run", "--detach", "--name", container, "--network=none", "--health-interval=disable",
               "--read-only", "--cap-drop=ALL", "--cap-add=NET_BIND_SERVICE", tag)
    started = wait_for_event(podman, container, "started")
    assert started.get("listen") == ["0.0.0.0:25"], started
    assert process_uid(podman, container) == IMAGE_UID
    health = podman.run("exec", container, "stsrelay", "health", check=False)
    assert health.returncode == 0, "stsrelay health exited %d: %s%s" % (
        health.returncode, health.stdout.decode(errors="replace"), health.stderr.decode(errors="replace"))
    podman.run("stop", "--time", "60", container, timeout=PODMAN_TIMEOUT)
    code = wait_for_exit(podman, container)
    assert code == 0, "exit status %d after SIGTERM:\n%s" % (code, log_text(podman, container))
    problems = problems_in(events_of(podman, container))
    assert not problems, "problems in the container's log:\n" + "\n".join(problems[:50])
    print("container: the image's own config listens on 0.0.0.0:25 as uid %d (read-only root, only "
          "NET_BIND_SERVICE); healthy; stopped cleanly"
          % IMAGE_UID, flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--source-dir", required=True, help="the repository: the build context")
    options = parser.parse_args()
    source_dir = os.path.abspath(options.source_dir)

    directory = tempfile.mkdtemp(prefix="stsrelay-container-")
    os.chmod(directory, 0o755)  # nginx workers read the policy
    podman = Podman(directory)
    peers = Peers(directory)
    unique = "%d-%s" % (os.getpid(), uuid.uuid4().hex[:8])
    tag = "localhost/stsrelay-test:" + unique
    status = 1
    try:
        check_podman_runs(podman, directory, unique)
        require_programs("unbound", "nginx", "openssl", "swaks")
        ensure_base_image(podman, directory)
        build_image(podman, source_dir, tag, directory)
        check_relays_under_enforce(podman, tag, unique, directory, peers)
        check_default_config(podman, tag, unique)
        status = 0
    except Skip as reason:
        print("container: SKIPPED: podman cannot run here: %s" % reason, flush=True)
        status = SKIP_CODE
    finally:
        try:
            peers.stop()
        finally:
            problems = podman.cleanup()
            if problems:
                print("container: could not remove:\n  " + "\n  ".join(problems), file=sys.stderr)
                if status == 0:
                    status = 1
            shutil.rmtree(directory, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
