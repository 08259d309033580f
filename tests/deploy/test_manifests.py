"""The deployment files under deploy/ agree with the image and with the relay.

Parses every YAML file under deploy/ and checks what matters for running the
relay: the StatefulSet gives each replica its own queue volume at the image's
spool path, probes with `stsrelay health`, runs unprivileged, and waits long
enough on SIGTERM for the drain; the ConfigMap's stsrelay.toml uses only the
documented keys and passes `stsrelay check-config`; the Services and the
NetworkPolicy reach the pod's port; the compose file mounts the same paths.

Run: python3 test_manifests.py --stsrelay PATH [--source DIR] [unittest args]
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import tomllib
import unittest

import yaml

STSRELAY = None
SOURCE = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

SPOOL = "/var/spool/stsrelay"
CONFIG_FILE = "/etc/stsrelay/stsrelay.toml"
DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def deploy_path(*parts):
    return os.path.join(SOURCE, "deploy", *parts)


def load_yaml_documents(path):
    with open(path, encoding="utf-8") as file:
        return [document for document in yaml.safe_load_all(file) if document is not None]


def seconds(duration):
    match = re.fullmatch(r"(\d+)(ms|s|m|h|d)", duration)
    if not match:
        raise AssertionError("not a duration: %r" % duration)
    return int(match.group(1)) * DURATION_UNITS[match.group(2)]


def compose_seconds(duration):
    """Compose's durations: "1m30s", "360s", "6m"."""
    parts = re.findall(r"(\d+)(ms|s|m|h)", duration)
    if not parts or "".join(number + unit for number, unit in parts) != duration:
        raise AssertionError("not a compose duration: %r" % duration)
    return sum(int(number) * DURATION_UNITS[unit] for number, unit in parts)


def documented_keys():
    """Every config key of the README's configuration section ("the whole
    file with every default"), as "table.key" (top-level keys bare)."""
    with open(os.path.join(SOURCE, "README.md"), encoding="utf-8") as file:
        readme = file.read()
    section = readme[readme.index("\n## Configuration\n"):]
    block = re.search(r"```toml\n(.*?)```", section, re.DOTALL)
    keys = set()
    for name, value in tomllib.loads(block.group(1)).items():
        if isinstance(value, dict):
            keys.update(name + "." + key for key in value)
        else:
            keys.add(name)
    return keys


def used_keys(config):
    keys = set()
    for name, value in config.items():
        if isinstance(value, dict):
            keys.update(name + "." + key for key in value)
        else:
            keys.add(name)
    return keys


def check_config(test, toml_text, label):
    """Runs `stsrelay check-config` on TOML_TEXT; returns the effective
    configuration it prints."""
    with tempfile.TemporaryDirectory(prefix="stsrelay-deploy-") as directory:
        path = os.path.join(directory, "stsrelay.toml")
        with open(path, "w", encoding="utf-8") as file:
            file.write(toml_text)
        result = subprocess.run([STSRELAY, "check-config", "-c", path], capture_output=True,
                                text=True, timeout=60, check=False)
    test.assertEqual(result.returncode, 0,
                     "%s: stsrelay check-config failed:\n%s%s" % (label, result.stdout, result.stderr))
    return tomllib.loads(result.stdout)


def listen_port(config):
    address = config["listen"]["addresses"][0]
    return int(address.rsplit(":", 1)[1])


def covers_loopback(networks):
    return any(network.startswith("127.") or network == "::1/128" for network in networks)


class Image:
    """The facts of deploy/Dockerfile the deployment files depend on."""

    def __init__(self):
        with open(deploy_path("Dockerfile"), encoding="utf-8") as file:
            text = file.read()
        self.uid = int(re.search(r"--uid\s+(\d+)", text).group(1))
        self.gid = int(re.search(r"--gid\s+(\d+)", text).group(1))
        self.volumes = re.findall(r"^VOLUME\s+(\S+)", text, re.MULTILINE)
        self.exposed = [int(port) for port in re.findall(r"^EXPOSE\s+(\d+)", text, re.MULTILINE)]
        cmd = re.search(r"^CMD\s+(\[.*\])\s*$", text, re.MULTILINE).group(1)
        self.cmd = yaml.safe_load(cmd)
        self.config_file = self.cmd[self.cmd.index("-c") + 1]


class AllYaml(unittest.TestCase):
    def test_every_yaml_file_under_deploy_parses(self):
        found = []
        for directory, _, names in os.walk(deploy_path()):
            for name in sorted(names):
                if name.endswith((".yaml", ".yml")):
                    path = os.path.join(directory, name)
                    found.append(path)
                    documents = load_yaml_documents(path)
                    self.assertTrue(documents, "%s: no YAML document" % path)
                    for document in documents:
                        self.assertIsInstance(document, dict, "%s: a document is not a mapping" % path)
        self.assertIn(deploy_path("docker-compose.yml"), found)
        self.assertIn(deploy_path("kubernetes", "kustomization.yaml"), found)

    def test_kubernetes_objects_are_complete(self):
        for name in sorted(os.listdir(deploy_path("kubernetes"))):
            if name == "kustomization.yaml" or not name.endswith(".yaml"):
                continue
            for document in load_yaml_documents(deploy_path("kubernetes", name)):
                for field in ("apiVersion", "kind", "metadata"):
                    self.assertIn(field, document, "%s: %s missing" % (name, field))
                self.assertTrue(document["metadata"].get("name"), "%s: metadata.name missing" % name)

    def test_kustomization_lists_every_manifest(self):
        kustomization = load_yaml_documents(deploy_path("kubernetes", "kustomization.yaml"))[0]
        self.assertEqual(kustomization["kind"], "Kustomization")
        manifests = sorted(name for name in os.listdir(deploy_path("kubernetes"))
                           if name.endswith(".yaml") and name != "kustomization.yaml")
        self.assertEqual(sorted(kustomization["resources"]), manifests)


class Kubernetes(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.image = Image()
        cls.objects = {}
        for name in os.listdir(deploy_path("kubernetes")):
            if name.endswith(".yaml") and name != "kustomization.yaml":
                for document in load_yaml_documents(deploy_path("kubernetes", name)):
                    cls.objects[(document["kind"], document["metadata"]["name"])] = document
        cls.statefulset = cls.objects[("StatefulSet", "stsrelay")]
        cls.pod = cls.statefulset["spec"]["template"]["spec"]
        (cls.container,) = cls.pod["containers"]
        configmap = cls.objects[("ConfigMap", "stsrelay-config")]
        cls.toml_text = configmap["data"]["stsrelay.toml"]
        cls.config = tomllib.loads(cls.toml_text)

    def mount(self, path):
        mounts = [mount for mount in self.container.get("volumeMounts", []) if mount["mountPath"] == path]
        self.assertEqual(len(mounts), 1, "one volumeMount at %s" % path)
        return mounts[0]

    def pod_labels(self):
        return self.statefulset["spec"]["template"]["metadata"]["labels"]

    def assert_selects_pod(self, selector, what):
        self.assertTrue(selector, "%s selects nothing" % what)
        for key, value in selector.items():
            self.assertEqual(self.pod_labels().get(key), value, "%s does not select the pod" % what)

    def container_port(self, port):
        """The containerPort that a Service's targetPort (name or number) means."""
        for entry in self.container["ports"]:
            if port in (entry.get("name"), entry["containerPort"]):
                return entry["containerPort"]
        raise AssertionError("targetPort %r is no port of the container" % port)

    def test_configmap_uses_only_documented_keys(self):
        unknown = used_keys(self.config) - documented_keys()
        self.assertFalse(unknown, "keys the README's configuration section does not define: %s"
                         % sorted(unknown))

    def test_configmap_passes_check_config(self):
        effective = check_config(self, self.toml_text, "configmap.yaml")
        self.assertEqual(effective["queue"]["directory"], SPOOL)
        self.assertTrue(effective["sts"]["cache_file"].startswith(SPOOL + "/"),
                        "the policy cache must be on the volume")
        self.assertEqual(effective["log"]["format"], "json")
        self.assertEqual(listen_port(effective), self.container["ports"][0]["containerPort"])
        self.assertIn(listen_port(effective), self.image.exposed)
        # `stsrelay health` connects over loopback: a 554 greeting fails it.
        self.assertTrue(covers_loopback(effective["listen"]["allowed_networks"]),
                        "listen.allowed_networks must keep 127.0.0.0/8 for the probes")

    def test_config_is_mounted_where_the_relay_reads_it(self):
        mount = self.mount(os.path.dirname(CONFIG_FILE))
        self.assertTrue(mount.get("readOnly"))
        volume = next(v for v in self.pod["volumes"] if v["name"] == mount["name"])
        self.assertEqual(volume["configMap"]["name"], "stsrelay-config")
        self.assertEqual(self.image.config_file, CONFIG_FILE)
        args = self.container.get("args", self.image.cmd)
        self.assertEqual(args[args.index("-c") + 1], CONFIG_FILE)

    def test_each_replica_has_its_own_spool_claim(self):
        templates = {t["metadata"]["name"]: t for t in self.statefulset["spec"]["volumeClaimTemplates"]}
        mount = self.mount(SPOOL)
        self.assertIn(mount["name"], templates, "the spool must be a volumeClaimTemplate, not a shared volume")
        self.assertNotIn(mount["name"], [v["name"] for v in self.pod.get("volumes", [])])
        self.assertEqual(templates[mount["name"]]["spec"]["accessModes"], ["ReadWriteOnce"])
        self.assertIn("storage", templates[mount["name"]]["spec"]["resources"]["requests"])
        self.assertFalse(mount.get("readOnly", False))
        self.assertIn(SPOOL, self.image.volumes)

    def test_probes_run_stsrelay_health(self):
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            command = self.container[probe]["exec"]["command"]
            self.assertEqual(command[:2], ["stsrelay", "health"], probe)
            if "-c" in command:
                self.assertEqual(command[command.index("-c") + 1], CONFIG_FILE, probe)
            if "--timeout" in command:
                self.assertLess(float(command[command.index("--timeout") + 1]),
                                self.container[probe].get("timeoutSeconds", 1),
                                "%s: the kubelet must not kill the check before its own timeout" % probe)

    def test_grace_period_covers_the_drain(self):
        effective = check_config(self, self.toml_text, "configmap.yaml")
        drain = seconds(effective["delivery"]["command_timeout"])
        pre_stop = self.container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
        if pre_stop[:1] == ["sleep"]:
            drain += int(pre_stop[1])
        grace = self.pod["terminationGracePeriodSeconds"]
        self.assertGreaterEqual(grace, drain + 10,
                                "terminationGracePeriodSeconds %d < preStop + delivery.command_timeout "
                                "(%d s) + a margin" % (grace, drain))

    def test_runs_unprivileged(self):
        pod = self.pod["securityContext"]
        container = self.container["securityContext"]
        self.assertTrue(pod["runAsNonRoot"])
        self.assertEqual(pod["runAsUser"], self.image.uid, "the image's user stsrelay")
        self.assertEqual(pod["runAsGroup"], self.image.gid)
        self.assertEqual(pod["fsGroup"], self.image.gid, "the spool claim must be writable by the relay")
        self.assertIs(container["allowPrivilegeEscalation"], False)
        self.assertIs(container["readOnlyRootFilesystem"], True)
        self.assertNotIn("privileged", container)
        self.assertEqual(container["capabilities"]["drop"], ["ALL"])
        self.assertEqual(container["capabilities"]["add"], ["NET_BIND_SERVICE"])
        self.assertFalse(self.pod.get("hostNetwork", False))
        # With no_new_privs the file capability may be ignored: the port must
        # be unprivileged inside the pod's network namespace.
        sysctls = {s["name"]: int(s["value"]) for s in pod.get("sysctls", [])}
        self.assertLessEqual(sysctls.get("net.ipv4.ip_unprivileged_port_start", 1024), listen_port(self.config))

    def test_resources_are_set(self):
        resources = self.container["resources"]
        for kind in ("cpu", "memory"):
            self.assertIn(kind, resources["requests"])
        self.assertIn("memory", resources["limits"])

    def test_services_reach_the_pod_port(self):
        service = self.objects[("Service", "stsrelay")]
        self.assertEqual(service["spec"].get("type", "ClusterIP"), "ClusterIP")
        self.assert_selects_pod(service["spec"]["selector"], "Service stsrelay")
        (port,) = service["spec"]["ports"]
        self.assertEqual(port["port"], 25)
        self.assertEqual(port.get("protocol", "TCP"), "TCP")
        self.assertEqual(self.container_port(port.get("targetPort", port["port"])), listen_port(self.config))

        governing = self.objects[("Service", self.statefulset["spec"]["serviceName"])]
        self.assertEqual(governing["spec"]["clusterIP"], "None", "the StatefulSet's serviceName must be headless")
        self.assert_selects_pod(governing["spec"]["selector"], "the headless Service")

    def test_statefulset_selects_its_pods(self):
        self.assert_selects_pod(self.statefulset["spec"]["selector"]["matchLabels"], "the StatefulSet")

    def test_network_policy_opens_what_the_relay_needs(self):
        policy = self.objects[("NetworkPolicy", "stsrelay")]["spec"]
        self.assert_selects_pod(policy["podSelector"]["matchLabels"], "the NetworkPolicy")
        inbound = {(p["port"], p.get("protocol", "TCP")) for rule in policy["ingress"] for p in rule["ports"]}
        self.assertEqual(inbound, {(listen_port(self.config), "TCP")})
        outbound = {(p["port"], p.get("protocol", "TCP")) for rule in policy["egress"] for p in rule["ports"]}
        self.assertEqual(outbound, {(self.config["delivery"]["port"], "TCP"),
                                    (self.config["sts"]["policy_port"], "TCP"), (53, "UDP"), (53, "TCP")})


class Compose(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.image = Image()
        cls.compose = load_yaml_documents(deploy_path("docker-compose.yml"))[0]
        (cls.service,) = cls.compose["services"].values()

    def volume(self, target):
        """(source, options) of the short-syntax volume mounted at TARGET."""
        for entry in self.service["volumes"]:
            source, mounted, *options = entry.split(":")
            if mounted == target:
                return source, options
        raise AssertionError("no volume mounted at %s" % target)

    def config_text(self):
        source, _ = self.volume(self.image.config_file)
        with open(os.path.join(deploy_path(), source), encoding="utf-8") as file:
            return file.read()

    def test_builds_the_image(self):
        build = self.service["build"]
        self.assertEqual(os.path.normpath(os.path.join(deploy_path(), build["context"])), SOURCE)
        self.assertTrue(os.path.isfile(os.path.join(SOURCE, build["dockerfile"])))

    def test_spool_is_a_named_volume(self):
        source, options = self.volume(SPOOL)
        self.assertIn(source, self.compose["volumes"], "the spool must be a named volume")
        self.assertNotIn("ro", options)
        self.assertIn(SPOOL, self.image.volumes)

    def test_config_is_mounted_read_only_and_valid(self):
        _, options = self.volume(self.image.config_file)
        self.assertIn("ro", options)
        effective = check_config(self, self.config_text(), "docker-compose.yml's config")
        self.assertEqual(effective["queue"]["directory"], SPOOL)
        self.assertTrue(effective["sts"]["cache_file"].startswith(SPOOL + "/"))
        self.assertTrue(covers_loopback(effective["listen"]["allowed_networks"]),
                        "listen.allowed_networks must keep 127.0.0.0/8 for the HEALTHCHECK")

    def test_publishes_the_listener(self):
        effective = check_config(self, self.config_text(), "docker-compose.yml's config")
        published = [str(port).rsplit(":", 1)[1] for port in self.service["ports"]]
        self.assertIn(str(listen_port(effective)), published)

    def test_stops_gracefully_and_restarts(self):
        effective = check_config(self, self.config_text(), "docker-compose.yml's config")
        self.assertEqual(self.service.get("stop_signal", "SIGTERM"), "SIGTERM")
        self.assertGreater(compose_seconds(self.service["stop_grace_period"]),
                           seconds(effective["delivery"]["command_timeout"]))
        self.assertIn(self.service["restart"], ("always", "unless-stopped", "on-failure"))

    def test_runs_unprivileged(self):
        self.assertNotIn(self.service.get("user"), ("root", "0", 0))
        self.assertNotIn("privileged", self.service)
        self.assertEqual(self.service["cap_drop"], ["ALL"])
        self.assertEqual(self.service["cap_add"], ["NET_BIND_SERVICE"])


def main():
    global STSRELAY, SOURCE
    parser = argparse.ArgumentParser()
    parser.add_argument("--stsrelay", required=True, help="the stsrelay binary")
    parser.add_argument("--source", default=SOURCE, help="the repository's root")
    arguments, rest = parser.parse_known_args()
    STSRELAY = os.path.abspath(arguments.stsrelay)
    SOURCE = os.path.abspath(arguments.source)
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
