"""deploy/k8s: the Kubernetes manifests that mirror stack.yaml, checked offline (no cluster ran them here).

- `kubectl kustomize` renders them (with keys made for the test, as `ghostbox keys` would);
- `kubectl set env --local` decodes every rendered object into kubectl's own Go types, offline: a wrong type
  (a string where an int32 goes) fails there. kubectl has no offline schema check (`--dry-run=client` and
  `--validate` fetch the server's OpenAPI), and Go's decoder passes unknown fields, so:
- a small check of our own holds each object against the apps/v1, batch/v1 and v1 shapes these manifests
  use: known fields only (a typo is an error), the required ones present, and the references between
  objects (selectors and labels, volumes and mounts, Secret and ConfigMap keys, the Service and the
  graph config's workers endpoint) resolved. It runs without kubectl too, on the files as they are.

kubectl: the machine's, or Debian's kubernetes-client (kubectl 1.20, kustomize 2.0), which .ci/run installs
where none is; the rendering tests skip with that reason without one.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "deploy" / "k8s"
KUBECTL = shutil.which("kubectl")
HEALTH = ["python", "-P", "-m", "pipeline.stream.health"]

# type -> (known fields, required fields, {field: child type; [type] for a list of it})
META = ({"name", "generateName", "namespace", "labels", "annotations", "ownerReferences", "finalizers"}, {"name"}, {})
SHAPES: dict[str, tuple[set[str], set[str], dict[str, Any]]] = {
    "ObjectMeta": META,
    "Deployment": ({"apiVersion", "kind", "metadata", "spec"}, {"metadata", "spec"},
                   {"metadata": "ObjectMeta", "spec": "DeploymentSpec"}),
    "DeploymentSpec": ({"replicas", "selector", "template", "strategy", "minReadySeconds", "revisionHistoryLimit",
                        "paused", "progressDeadlineSeconds"}, {"selector", "template"},
                       {"selector": "LabelSelector", "template": "PodTemplateSpec"}),
    "Job": ({"apiVersion", "kind", "metadata", "spec"}, {"metadata", "spec"},
            {"metadata": "ObjectMeta", "spec": "JobSpec"}),
    "JobSpec": ({"parallelism", "completions", "activeDeadlineSeconds", "podFailurePolicy", "successPolicy",
                 "backoffLimit", "backoffLimitPerIndex", "maxFailedIndexes", "selector", "manualSelector", "template",
                 "ttlSecondsAfterFinished", "completionMode", "suspend", "podReplacementPolicy", "managedBy"},
                {"template"}, {"selector": "LabelSelector", "template": "PodTemplateSpec"}),
    "LabelSelector": ({"matchLabels", "matchExpressions"}, set(), {}),
    "PodTemplateSpec": ({"metadata", "spec"}, {"spec"}, {"metadata": "TemplateMeta", "spec": "PodSpec"}),
    "TemplateMeta": (META[0], set(), {}),
    "PodSpec": ({"volumes", "initContainers", "containers", "ephemeralContainers", "restartPolicy",
                 "terminationGracePeriodSeconds", "activeDeadlineSeconds", "dnsPolicy", "nodeSelector",
                 "serviceAccountName", "serviceAccount", "automountServiceAccountToken", "nodeName", "hostNetwork",
                 "hostPID", "hostIPC", "shareProcessNamespace", "securityContext", "imagePullSecrets", "hostname",
                 "subdomain", "affinity", "schedulerName", "tolerations", "hostAliases", "priorityClassName",
                 "priority", "dnsConfig", "readinessGates", "runtimeClassName", "enableServiceLinks",
                 "preemptionPolicy", "overhead", "topologySpreadConstraints", "setHostnameAsFQDN", "os", "hostUsers",
                 "schedulingGates", "resourceClaims", "resources"}, {"containers"},
                {"volumes": ["Volume"], "initContainers": ["Container"], "containers": ["Container"],
                 "securityContext": "PodSecurityContext"}),
    "PodSecurityContext": ({"seLinuxOptions", "windowsOptions", "runAsUser", "runAsGroup", "runAsNonRoot",
                            "supplementalGroups", "supplementalGroupsPolicy", "fsGroup", "sysctls",
                            "fsGroupChangePolicy", "seccompProfile", "appArmorProfile", "seLinuxChangePolicy"},
                           set(), {}),
    "Container": ({"name", "image", "command", "args", "workingDir", "ports", "envFrom", "env", "resources",
                   "resizePolicy", "restartPolicy", "volumeMounts", "volumeDevices", "livenessProbe",
                   "readinessProbe", "startupProbe", "lifecycle", "terminationMessagePath",
                   "terminationMessagePolicy", "imagePullPolicy", "securityContext", "stdin", "stdinOnce", "tty"},
                  {"name", "image"},
                  {"ports": ["ContainerPort"], "resources": "Resources", "volumeMounts": ["VolumeMount"],
                   "livenessProbe": "Probe", "readinessProbe": "Probe", "startupProbe": "Probe",
                   "securityContext": "SecurityContext"}),
    "ContainerPort": ({"name", "hostPort", "containerPort", "protocol", "hostIP"}, {"containerPort"}, {}),
    "Resources": ({"limits", "requests", "claims"}, set(), {}),
    "VolumeMount": ({"name", "readOnly", "recursiveReadOnly", "mountPath", "subPath", "mountPropagation",
                     "subPathExpr"}, {"name", "mountPath"}, {}),
    "Probe": ({"exec", "httpGet", "tcpSocket", "grpc", "initialDelaySeconds", "timeoutSeconds", "periodSeconds",
               "successThreshold", "failureThreshold", "terminationGracePeriodSeconds"}, set(), {"exec": "Exec"}),
    "Exec": ({"command"}, {"command"}, {}),
    "SecurityContext": ({"capabilities", "privileged", "seLinuxOptions", "windowsOptions", "runAsUser",
                         "runAsGroup", "runAsNonRoot", "readOnlyRootFilesystem", "allowPrivilegeEscalation",
                         "procMount", "seccompProfile", "appArmorProfile"}, set(), {"capabilities": "Capabilities"}),
    "Capabilities": ({"add", "drop"}, set(), {}),
    "Volume": ({"name", "hostPath", "emptyDir", "gcePersistentDisk", "awsElasticBlockStore", "gitRepo", "secret",
                "nfs", "iscsi", "glusterfs", "persistentVolumeClaim", "rbd", "flexVolume", "cinder", "cephfs",
                "flocker", "downwardAPI", "fc", "azureFile", "configMap", "vsphereVolume", "quobyte", "azureDisk",
                "photonPersistentDisk", "projected", "portworxVolume", "scaleIO", "storageos", "csi", "ephemeral",
                "image"}, {"name"},
               {"secret": "SecretVolume", "configMap": "ConfigMapVolume", "persistentVolumeClaim": "ClaimVolume",
                "emptyDir": "EmptyDir"}),
    "SecretVolume": ({"secretName", "items", "defaultMode", "optional"}, {"secretName"}, {"items": ["KeyToPath"]}),
    "ConfigMapVolume": ({"name", "items", "defaultMode", "optional"}, {"name"}, {"items": ["KeyToPath"]}),
    "KeyToPath": ({"key", "path", "mode"}, {"key", "path"}, {}),
    "ClaimVolume": ({"claimName", "readOnly"}, {"claimName"}, {}),
    "EmptyDir": ({"medium", "sizeLimit"}, set(), {}),
    "Service": ({"apiVersion", "kind", "metadata", "spec"}, {"metadata", "spec"},
                {"metadata": "ObjectMeta", "spec": "ServiceSpec"}),
    "ServiceSpec": ({"ports", "selector", "clusterIP", "clusterIPs", "type", "externalIPs", "sessionAffinity",
                     "loadBalancerIP", "loadBalancerSourceRanges", "externalName", "externalTrafficPolicy",
                     "healthCheckNodePort", "publishNotReadyAddresses", "sessionAffinityConfig", "ipFamilies",
                     "ipFamilyPolicy", "allocateLoadBalancerNodePorts", "loadBalancerClass", "internalTrafficPolicy",
                     "trafficDistribution"}, {"ports"}, {"ports": ["ServicePort"]}),
    "ServicePort": ({"name", "protocol", "appProtocol", "port", "targetPort", "nodePort"}, {"port"}, {}),
    "PersistentVolumeClaim": ({"apiVersion", "kind", "metadata", "spec"}, {"metadata", "spec"},
                              {"metadata": "ObjectMeta", "spec": "ClaimSpec"}),
    "ClaimSpec": ({"accessModes", "selector", "resources", "volumeName", "storageClassName", "volumeMode",
                   "dataSource", "dataSourceRef", "volumeAttributesClassName"}, {"accessModes", "resources"},
                  {"resources": "Resources", "selector": "LabelSelector"}),
    "ConfigMap": ({"apiVersion", "kind", "metadata", "data", "binaryData", "immutable"}, {"metadata"},
                  {"metadata": "ObjectMeta"}),
    "Secret": ({"apiVersion", "kind", "metadata", "data", "stringData", "type", "immutable"}, {"metadata"},
               {"metadata": "ObjectMeta"}),
}
API_VERSIONS = {"Deployment": "apps/v1", "Job": "batch/v1", "Service": "v1", "PersistentVolumeClaim": "v1",
                "ConfigMap": "v1", "Secret": "v1"}
INTS = {"replicas", "backoffLimit", "containerPort", "port", "periodSeconds", "timeoutSeconds", "failureThreshold",
        "runAsUser", "runAsGroup", "fsGroup", "defaultMode", "mode", "initialDelaySeconds"}


def _shape_problems(value: Any, shape: str, where: str) -> list[str]:
    known, required, children = SHAPES[shape]
    if not isinstance(value, dict):
        return [f"{where}: expected a mapping ({shape})"]
    problems = [f"{where}.{key}: not a field of {shape}" for key in value if key not in known]
    problems += [f"{where}: {shape} needs '{key}'" for key in sorted(required) if key not in value]
    for key, item in value.items():
        if key in INTS and not (isinstance(item, int) and not isinstance(item, bool)):
            problems.append(f"{where}.{key}: {item!r} is not an integer")
        child = children.get(key)
        if isinstance(child, list):
            if not isinstance(item, list):
                problems.append(f"{where}.{key}: expected a list")
                continue
            for i, entry in enumerate(item):
                problems += _shape_problems(entry, child[0], f"{where}.{key}[{i}]")
        elif child:
            problems += _shape_problems(item, child, f"{where}.{key}")
    return problems


def _pod_spec(obj: dict) -> dict:
    return obj["spec"]["template"]["spec"]


def check_objects(objects: list[dict]) -> list[str]:
    """Every problem found in these (rendered or raw) objects; none: they hold together."""
    problems: list[str] = []
    by_kind: dict[str, dict[str, dict]] = {}
    for obj in objects:
        kind = obj.get("kind", "?")
        name = obj.get("metadata", {}).get("name", "?")
        if kind not in API_VERSIONS:
            problems.append(f"{kind}/{name}: a kind this check does not know")
            continue
        if obj.get("apiVersion") != API_VERSIONS[kind]:
            problems.append(f"{kind}/{name}: apiVersion {obj.get('apiVersion')!r}, not {API_VERSIONS[kind]}")
        problems += _shape_problems(obj, kind, f"{kind}/{name}")
        by_kind.setdefault(kind, {})[name] = obj
    if problems:
        return problems
    pods = {f"{k}/{n}": o for k in ("Deployment", "Job") for n, o in by_kind.get(k, {}).items()}
    for where, obj in pods.items():
        labels = obj["spec"]["template"].get("metadata", {}).get("labels", {})
        selector = obj["spec"].get("selector", {}).get("matchLabels", {})
        if obj["kind"] == "Deployment" and (not selector or any(labels.get(k) != v for k, v in selector.items())):
            problems.append(f"{where}: selector {selector} does not match the pod labels {labels}")
        spec = _pod_spec(obj)
        restart = spec.get("restartPolicy", "Always")
        if obj["kind"] == "Job" and restart not in ("OnFailure", "Never"):
            problems.append(f"{where}: a Job's restartPolicy is OnFailure or Never, not {restart}")
        if obj["kind"] == "Deployment" and restart != "Always":
            problems.append(f"{where}: a Deployment's restartPolicy can only be Always")
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for container in spec["containers"]:
            for mount in container.get("volumeMounts", []):
                if mount["name"] not in volumes:
                    problems.append(f"{where}: mount {mount['name']} has no volume")
        for volume in volumes.values():
            for source, kind, key in (("secret", "Secret", "secretName"), ("configMap", "ConfigMap", "name"),
                                      ("persistentVolumeClaim", "PersistentVolumeClaim", "claimName")):
                if source not in volume:
                    continue
                target = by_kind.get(kind, {}).get(volume[source][key])
                if target is None:
                    problems.append(f"{where}: volume {volume['name']} names {kind} {volume[source][key]}, not here")
                    continue
                keys = set(target.get("data", {})) | set(target.get("stringData", {}))
                for item in volume[source].get("items", []):
                    if item["key"] not in keys:
                        problems.append(f"{where}: volume {volume['name']} wants key {item['key']} of {kind} "
                                        f"{target['metadata']['name']}, which has {sorted(keys)}")
    for name, service in by_kind.get("Service", {}).items():
        selector = service["spec"].get("selector", {})
        matched = [w for w, o in pods.items()
                   if selector and all(o["spec"]["template"]["metadata"].get("labels", {}).get(k) == v
                                       for k, v in selector.items())]
        if len(matched) != 1:
            problems.append(f"Service/{name}: selector {selector} matches {matched or 'no pod template'}")
            continue
        ports = {p.get("containerPort") for c in _pod_spec(pods[matched[0]])["containers"] for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            if port.get("targetPort", port["port"]) not in ports:
                problems.append(f"Service/{name}: port {port} reaches no containerPort of {matched[0]} ({ports})")
    return problems


def _kustomization() -> dict:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def _raw_objects() -> list[dict]:
    """The resources as written, and the generators' ConfigMap and Secret as kustomize would make them
    (without the hash in their names, which kustomize also writes into the references)."""
    kustomization = _kustomization()
    objects = [doc for name in kustomization["resources"] for doc in yaml.safe_load_all((K8S / name).read_text())
               if doc]
    for kind, key in (("ConfigMap", "configMapGenerator"), ("Secret", "secretGenerator")):
        for generator in kustomization.get(key, []):
            data = {f.split("=", 1)[0].rsplit("/", 1)[-1]: "..." for f in generator.get("files", [])}
            objects.append({"apiVersion": "v1", "kind": kind, "metadata": {"name": generator["name"]}, "data": data})
    return objects


def _with_keys(tmp_path: Path) -> Path:
    """A copy of deploy/k8s with the key files a user makes first (`ghostbox keys ... server client`)."""
    from pipeline.stream.provenance import SEAL_FILE, make_seal_key
    from pipeline.stream.security import make_keypair

    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy, ignore=shutil.ignore_patterns("keys"))
    for name in ("server", "client"):
        make_keypair(copy / "keys", name)
    make_seal_key(copy / "keys" / SEAL_FILE)
    return copy


def _kubectl(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    if KUBECTL is None:
        pytest.skip("no kubectl (as root, .ci/run installs Debian's kubernetes-client)")
    # no cluster is asked anything: an empty kubeconfig, so that nothing can reach one by accident
    # errors="replace": kubectl 1.20 quotes the bad byte of a failed decode raw
    return subprocess.run([KUBECTL, "--kubeconfig", "/dev/null", *args], capture_output=True, text=True, cwd=cwd,
                          errors="replace", timeout=120)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    copy = _with_keys(tmp_path_factory.mktemp("kustomize"))
    result = _kubectl("kustomize", str(copy))
    assert result.returncode == 0, result.stderr
    out = copy.parent / "rendered.yaml"
    out.write_text(result.stdout)
    return out, [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def test_manifests_hold_together_as_written() -> None:
    assert check_objects(_raw_objects()) == []


def test_kustomize_renders_what_mirrors_the_stack(rendered: tuple[Path, list[dict]]) -> None:
    _, objects = rendered
    assert check_objects(objects) == []
    kinds = sorted((o["kind"], o["metadata"]["name"].rsplit("-", 1)[0] if o["kind"] in ("ConfigMap", "Secret")
                    else o["metadata"]["name"]) for o in objects)
    assert kinds == [("ConfigMap", "ghostbox-graph"), ("Deployment", "ghostbox-worker"), ("Job", "ghostbox-graph"),
                     ("PersistentVolumeClaim", "ghostbox-data"), ("Secret", "ghostbox-keys"), ("Service", "graph")]
    by_kind = {o["kind"]: o for o in objects}
    assert by_kind["Deployment"]["spec"]["replicas"] >= 2
    assert by_kind["Service"]["spec"]["clusterIP"] == "None"  # headless: stack.yaml's dnsrr
    secret = by_kind["Secret"]
    assert sorted(secret["data"]) == ["client.key", "client.key_secret", "seal.key", "server.key",
                                      "server.key_secret"]
    # each side mounts only its own keys, as stack.yaml's secrets do
    mounted = {kind: {i["key"] for v in _pod_spec(by_kind[kind])["volumes"] if "secret" in v
                      for i in v["secret"]["items"]} for kind in ("Job", "Deployment")}
    assert mounted == {"Job": {"server.key_secret", "client.key", "seal.key"},
                       "Deployment": {"client.key_secret", "server.key"}}
    for kind in ("Job", "Deployment"):
        container = _pod_spec(by_kind[kind])["containers"][0]
        assert container["livenessProbe"]["exec"]["command"] == HEALTH
        assert _pod_spec(by_kind[kind])["securityContext"]["runAsNonRoot"] is True
    assert _pod_spec(by_kind["Job"])["containers"][0]["readinessProbe"]["exec"]["command"] == HEALTH


def test_kubectl_decodes_every_object(rendered: tuple[Path, list[dict]]) -> None:
    """kubectl's typed decoding, offline (`--local`): the pod templates' objects are printed, the others
    only said not to be pods; a field of the wrong type stops it with 'unable to decode'."""
    path, _ = rendered
    result = _kubectl("set", "env", "--local", "-f", str(path), "-o", "name", "GHOSTBOX_CHECK=1")
    assert "unable to decode" not in result.stderr, result.stderr
    assert sorted(result.stdout.split()) == ["deployment.apps/ghostbox-worker", "job.batch/ghostbox-graph"], \
        result.stdout + result.stderr
    bad = path.read_text().replace("replicas: 2", "replicas: two")
    broken = path.with_name("broken.yaml")
    broken.write_text(bad)
    assert "unable to decode" in _kubectl("set", "env", "--local", "-f", str(broken), "-o", "name", "A=1").stderr


def test_the_check_catches_mistakes() -> None:
    def problems_after(change) -> list[str]:
        objects = _raw_objects()
        change({o["kind"]: o for o in objects})
        return check_objects(objects)

    def typo(o: dict) -> None:
        _pod_spec(o["Deployment"])["containers"][0]["imagePulPolicy"] = "Always"

    def selector(o: dict) -> None:
        o["Deployment"]["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] = "graph"

    def secret_key(o: dict) -> None:
        _pod_spec(o["Job"])["volumes"][1]["secret"]["items"][0]["key"] = "server.secret"

    def port(o: dict) -> None:
        o["Service"]["spec"]["ports"][0]["port"] = 5552
        o["Service"]["spec"]["ports"][0].pop("targetPort", None)

    def restart(o: dict) -> None:
        _pod_spec(o["Job"])["restartPolicy"] = "Always"

    def missing(o: dict) -> None:
        del _pod_spec(o["Deployment"])["containers"][0]["image"]

    def not_int(o: dict) -> None:
        o["Deployment"]["spec"]["replicas"] = "2"

    for change, expected in ((typo, "imagePulPolicy: not a field of Container"), (selector, "does not match"),
                             (secret_key, "wants key server.secret"), (port, "reaches no containerPort"),
                             (restart, "OnFailure or Never"), (missing, "Container needs 'image'"),
                             (not_int, "is not an integer")):
        found = problems_after(change)
        assert any(expected in p for p in found), (change.__name__, found)


def test_graph_config_is_a_ghostbox_graph_whose_workers_find_the_service() -> None:
    from pipeline.stream.config import load_graph

    graph = load_graph(K8S / "graph.yaml")  # refuses what ghostbox would refuse
    objects = {o["kind"]: o for o in _raw_objects()}
    url = graph.endpoints.workers.url or ""
    host, port = url.removeprefix("tcp://").rsplit(":", 1)
    assert host == objects["Service"]["metadata"]["name"]
    assert int(port) in {p["port"] for p in objects["Service"]["spec"]["ports"]}
    # the containers copy the Secret to the keys folder the config names (a Secret's files are group-readable)
    script = _pod_spec(objects["Job"])["containers"][0]["args"][0]
    assert f"install -d -m 700 {graph.security.keys}" in script
    mounts = {m["mountPath"] for m in _pod_spec(objects["Job"])["containers"][0]["volumeMounts"]}
    assert "/etc/ghostbox" in mounts and "/data" in mounts
    assert graph.sinks[0].out.startswith("/data/")


def test_generated_keys_and_data_are_ignored_by_git() -> None:
    """The quick starts make keys/, data/ and deploy/k8s/keys/ in the clone: git status never offers them."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git clone")
    paths = ["keys/server.key_secret", "data/runs/demo/summary.json", "deploy/k8s/keys/client.key_secret"]
    result = subprocess.run(["git", "check-ignore", *paths], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert sorted(result.stdout.split()) == sorted(paths), result.stdout + result.stderr
