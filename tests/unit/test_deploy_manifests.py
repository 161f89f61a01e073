"""Static checks of the deployment files; no Docker engine and no cluster needed.

- ``docker-compose.yml`` against the Compose specification's JSON schema, plus healthchecks,
  pinned images and the absence of secret values.
- ``deploy/docker/flink.Dockerfile``: pinned base images, sources present in the build context.
- ``deploy/k8s``: each overlay built with a pinned kustomize (built once from its Go module and
  cached), every core object validated against the Kubernetes OpenAPI schemas (strict: unknown
  fields fail), then limits, probes, security contexts, credentials and the NetworkPolicies, the
  latter through an independent model of NetworkPolicy ingress semantics.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from ticklake.home import cache_dir
from ticklake.stack.downloads import go_install
from ticklake.stack.settings import KafkaStackSettings, MinioStackSettings, PostgresStackSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE_ENV_EXAMPLE = ROOT / "deploy" / "compose.env.example"
DOCKERFILE = ROOT / "deploy" / "docker" / "flink.Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
K8S_DIR = ROOT / "deploy" / "k8s"
OVERLAYS = ("local", "production")

KUSTOMIZE_MODULE = "sigs.k8s.io/kustomize/kustomize/v5"
# v5.8.1 builds with Go >= 1.24 (the project's minimum); v5.8.2 needs Go 1.26, v5.8.3 Go 1.27
KUSTOMIZE_VERSION = "v5.8.1"
# an older supported Kubernetes and the newest schema set that kubernetes-validate bundles
K8S_VERSIONS = ("1.31.0", "1.37.0")
CRD_GROUPS = {"flink.apache.org"}
NAMESPACE = "ticklake"
CREDENTIALS_SECRET = "ticklake-credentials"
PROM_REPORTER = "org.apache.flink.metrics.prometheus.PrometheusReporterFactory"
USER_CONTAINERS_NS = {"ticklake.io/role": "user-containers", "kubernetes.io/metadata.name": "u-1"}
RELAY_PORTS = {5558, 5559}

SECRETISH = re.compile(r"PASSWORD|SECRET|ACCESS_KEY|TOKEN", re.IGNORECASE)
INTERPOLATION = re.compile(r"(?<!\$)\$\{(\w+)")
REQUIRED_VARIABLE = re.compile(r"^\$\{\w+:\?[^}]+\}$")
ENV_REFERENCE = re.compile(r"(?<!\$)\$\((\w+)\)")

Obj = dict[str, Any]


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def parse_env_file(path: Path) -> dict[str, str]:
    pairs = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def image_is_pinned(image: str) -> bool:
    """A digest, or an explicit tag other than ``latest`` (a registry port is not a tag)."""
    if "@sha256:" in image:
        return True
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return False
    tag = last.split(":", 1)[1]
    return bool(tag) and tag != "latest" and "$" not in tag


def flink_properties(env: dict[str, Any]) -> dict[str, str]:
    props = {}
    for line in str(env.get("FLINK_PROPERTIES", "")).splitlines():
        if line.strip():
            key, _, value = line.partition(":")
            props[key.strip()] = value.strip()
    return props


def strings_in(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from strings_in(key)
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)


def kind_of(obj: Obj) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def one(objs: list[Obj], kind: str, name: str | None = None) -> Obj:
    found = [o for o in objs if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def k8s_bytes(quantity: str) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return float(quantity[: -len(suffix)]) * factor
    return float(quantity)


def flink_megabytes(size: str) -> float:
    """Flink's memory sizes: ``m`` is MiB, ``g`` is GiB (not Kubernetes' milli)."""
    number, unit = re.fullmatch(r"(\d+)([mg]?)", size.lower()).groups()  # type: ignore[union-attr]
    return float(number) * (1024 if unit == "g" else 1)


def pod_templates(objs: list[Obj]) -> Iterator[tuple[str, Obj, bool]]:
    """(name, pod template, long-running) of every built workload."""
    for obj in objs:
        if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet"):
            yield kind_of(obj), obj["spec"]["template"], True
        elif obj["kind"] == "Job":
            yield kind_of(obj), obj["spec"]["template"], False
        elif obj["kind"] == "CronJob":
            yield kind_of(obj), obj["spec"]["jobTemplate"]["spec"]["template"], False


def flink_pod_specs(deployment: Obj) -> dict[str, tuple[dict[str, str], Obj]]:
    """The operator's merge of the pod templates: role -> (labels, main container)."""
    spec = deployment["spec"]
    common = spec.get("podTemplate", {})
    result = {}
    for role in ("jobManager", "taskManager"):
        own = spec[role].get("podTemplate", {})
        labels = common.get("metadata", {}).get("labels", {}) | own.get("metadata", {}).get(
            "labels", {}
        )
        container: Obj = {}
        for template in (common, own):
            for c in template.get("spec", {}).get("containers", []):
                if c["name"] == "flink-main-container":
                    container |= c
        result[role] = (labels, container)
    return result


def all_containers(objs: list[Obj]) -> Iterator[tuple[str, Obj]]:
    for name, template, _ in pod_templates(objs):
        spec = template["spec"]
        for c in spec.get("initContainers", []) + spec["containers"]:
            yield f"{name}/{c['name']}", c
    for fd in (o for o in objs if o["kind"] == "FlinkDeployment"):
        spec = fd["spec"]
        for where in (spec, spec["jobManager"], spec["taskManager"]):
            for c in where.get("podTemplate", {}).get("spec", {}).get("containers", []):
                yield f"{kind_of(fd)}/{c['name']}", c


# A model of NetworkPolicy ingress semantics, independent of the manifests under test.


def selects(selector: Obj | None, labels: dict[str, str]) -> bool:
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def port_matches(ports: list[Obj] | None, port: int) -> bool:
    if not ports:
        return True
    for p in ports:
        if p.get("protocol", "TCP") != "TCP":
            continue
        if "port" not in p:
            return True
        start = int(p["port"])
        if start <= port <= int(p.get("endPort", start)):
            return True
    return False


def ingress_allowed(
    policies: list[Obj],
    target_labels: dict[str, str],
    port: int,
    source_ns: dict[str, str],
    source_labels: dict[str, str],
) -> bool:
    """Is TCP ``port`` of a pod in the ticklake namespace reachable from the given source?"""
    applicable = [
        p
        for p in policies
        if "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
        and selects(p["spec"]["podSelector"], target_labels)
    ]
    if not applicable:
        return True
    for policy in applicable:
        for rule in policy["spec"].get("ingress") or []:
            if not port_matches(rule.get("ports"), port):
                continue
            peers = rule.get("from")
            if not peers:
                return True
            for peer in peers:
                if "ipBlock" in peer:
                    continue
                ns_selector = peer.get("namespaceSelector")
                if ns_selector is None:
                    ns_ok = source_ns.get("kubernetes.io/metadata.name") == NAMESPACE
                else:
                    ns_ok = selects(ns_selector, source_ns)
                pod_selector = peer.get("podSelector")
                pod_ok = pod_selector is None or selects(pod_selector, source_labels)
                if ns_ok and pod_ok:
                    return True
    return False


# ---------------------------------------------------------------------------------------------
# docker-compose.yml
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> Obj:
    data: Obj = yaml.safe_load(COMPOSE_FILE.read_text())
    return data


def one_shot_services(compose: Obj) -> set[str]:
    return {
        dep
        for svc in compose["services"].values()
        for dep, spec in (svc.get("depends_on") or {}).items()
        if spec.get("condition") == "service_completed_successfully"
    }


def test_compose_file_follows_the_compose_specification() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
         str(COMPOSE_FILE)],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_long_running_compose_service_has_a_healthcheck(compose: Obj) -> None:
    one_shot = one_shot_services(compose)
    assert one_shot == {"minio-init"}
    for name, svc in compose["services"].items():
        if name in one_shot:
            assert svc.get("restart") == "no", f"{name} runs once and must not restart"
            continue
        check = svc.get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"
        assert check["test"] != ["NONE"], f"{name} disables its healthcheck"


def test_compose_services_wait_for_health(compose: Obj) -> None:
    services = compose["services"]
    one_shot = one_shot_services(compose)
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: the short depends_on form waits for start only"
        for dep, spec in deps.items():
            expected = "service_completed_successfully" if dep in one_shot else "service_healthy"
            assert spec.get("condition") == expected, f"{name} -> {dep}"
            assert dep in services
    flink = services["flink-jobmanager"]["depends_on"]
    assert {"kafka", "minio", "minio-init", "postgres"} <= set(flink)


def test_compose_images_are_pinned(compose: Obj) -> None:
    for name, svc in compose["services"].items():
        image = svc.get("image", "")
        assert image_is_pinned(image), f"{name}: image {image!r} has no pinned tag"
    flink = [s for s in compose["services"].values() if "build" in s]
    assert {s["build"]["dockerfile"] for s in flink} == {"deploy/docker/flink.Dockerfile"}


def test_compose_file_holds_no_secret_values(compose: Obj) -> None:
    for name, svc in compose["services"].items():
        env = svc.get("environment") or {}
        assert isinstance(env, dict), f"{name}: use the mapping form of environment"
        for key, value in env.items():
            if SECRETISH.search(key):
                assert REQUIRED_VARIABLE.match(str(value)), f"{name}: {key} is not ${{VAR:?...}}"
        for key, value in flink_properties(env).items():
            if re.search(r"secret|access-key|password", key):
                assert REQUIRED_VARIABLE.match(value), f"{name}: {key} is not ${{VAR:?...}}"
    example = parse_env_file(COMPOSE_ENV_EXAMPLE)
    used = {name for text in strings_in(compose) for name in INTERPOLATION.findall(text)}
    assert used <= set(example), f"undocumented in compose.env.example: {used - set(example)}"
    assert {k for k in example if SECRETISH.search(k)} == {
        "MINIO_ROOT_PASSWORD",
        "POSTGRES_PASSWORD",
    }
    for key, value in example.items():
        if SECRETISH.search(key):
            assert value == "", f"compose.env.example must not carry a value for {key}"


def test_compose_matches_the_local_stack(compose: Obj) -> None:
    services = compose["services"]
    kafka_env = services["kafka"]["environment"]
    kafka = KafkaStackSettings()
    assert kafka_env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert kafka_env["KAFKA_TRANSACTION_MAX_TIMEOUT_MS"] == str(kafka.transaction_max_timeout_ms)
    assert kafka_env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    factors = {k: v for k, v in kafka_env.items() if k.endswith(("REPLICATION_FACTOR", "_MIN_ISR"))}
    assert len(factors) >= 4
    assert set(factors.values()) == {"1"}

    bucket = MinioStackSettings().buckets[0]
    init = "\n".join(services["minio-init"]["command"])
    assert f"mc mb --ignore-existing ticklake/{bucket}" in init

    postgres = PostgresStackSettings()
    assert services["postgres"]["environment"]["POSTGRES_DB"] == postgres.database
    assert services["postgres"]["environment"]["POSTGRES_USER"] == postgres.user

    for role in ("flink-jobmanager", "flink-taskmanager"):
        props = flink_properties(services[role]["environment"])
        assert props["jobmanager.rpc.address"] == "flink-jobmanager"
        assert props["state.backend.type"] == "rocksdb"
        assert props["execution.checkpointing.dir"] == f"s3://{bucket}/flink/checkpoints"
        assert props["s3.endpoint"] == "http://minio:9000"
        assert props["s3.path.style.access"] == "true"
        assert props["metrics.reporter.prom.factory.class"] == PROM_REPORTER
        # the entrypoint strips whitespace from each line: a value with spaces would be mangled
        assert not any(" " in v for v in props.values() if not v.startswith("${")), props


# ---------------------------------------------------------------------------------------------
# deploy/docker/flink.Dockerfile
# ---------------------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, list[str]]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            word, _, rest = stripped.partition(" ")
            out.append((word.upper(), rest.split()))
    return out


def dockerignored(path: str) -> bool:
    patterns = [
        p.strip()
        for p in DOCKERIGNORE.read_text().splitlines()
        if p.strip() and not p.startswith("#")
    ]
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(
        fnmatch.fnmatch(prefix, pattern) or fnmatch.fnmatch(prefix, pattern.removeprefix("**/"))
        for pattern in patterns
        for prefix in prefixes
    )


def test_dockerfile_base_images_are_pinned() -> None:
    args: dict[str, str] = {}
    stages: set[str] = set()
    froms = 0
    for word, rest in dockerfile_instructions():
        if word == "ARG" and "=" in rest[0]:
            key, _, value = rest[0].partition("=")
            args.setdefault(key, value)
        elif word == "FROM":
            froms += 1
            words = [w for w in rest if not w.startswith("--")]
            image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], words[0])
            if image not in stages:
                assert image_is_pinned(image), f"FROM {image} is not pinned"
            if len(words) == 3 and words[1].upper() == "AS":
                stages.add(words[2])
    assert froms >= 2, "the image is built in stages: jars, then the runtime"


def test_dockerfile_copies_only_what_the_build_context_has() -> None:
    copied = []
    for word, rest in dockerfile_instructions():
        if word in ("COPY", "ADD") and not any(w.startswith("--from") for w in rest):
            sources = [w for w in rest if not w.startswith("--")][:-1]
            for source in sources:
                assert source == "." or list(ROOT.glob(source)), f"COPY {source}: no such file"
                assert source == "." or not dockerignored(source), f"{source} is dockerignored"
                copied.append(source)
    poms = {Path(s).stem for s in copied if s.startswith("stack/maven/") and s.endswith(".xml")}
    pins = {Path(s).stem for s in copied if s.endswith(".sha256")}
    assert poms == pins == {"flink-connectors", "flink-s3-plugin"}
    # `COPY .` must bring everything the package build needs
    assert "." in copied
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = {"pyproject.toml", "uv.lock", pyproject["project"]["readme"]}
    needed |= set(pyproject["tool"]["setuptools"]["package-dir"].values())
    for path in sorted(needed):
        assert (ROOT / path).exists(), path
        assert not dockerignored(path), f"{path} is needed by the image but dockerignored"
    for secret in ("deploy/compose.env", "deploy/k8s/overlays/local/credentials.env", ".env"):
        assert dockerignored(secret), f"{secret} would be sent to the Docker daemon"


# ---------------------------------------------------------------------------------------------
# deploy/k8s
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kustomize() -> Path:
    """kustomize at a pinned version, built once through the Go module proxy and cached."""
    return go_install(KUSTOMIZE_MODULE, KUSTOMIZE_VERSION, "kustomize", cache_dir())


def write_credentials(overlay_dir: Path) -> None:
    """credentials.env from the committed example, with test-only values for empty keys."""
    lines = []
    for raw in (overlay_dir / "credentials.env.example").read_text().splitlines():
        key, sep, value = raw.partition("=")
        if sep and not raw.lstrip().startswith("#") and not value:
            value = f"test-only-{key.lower()}"
        lines.append(f"{key}{sep}{value}")
    (overlay_dir / "credentials.env").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def k8s_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("deploy") / "k8s"
    shutil.copytree(K8S_DIR, target, ignore=shutil.ignore_patterns("credentials.env"))
    for overlay in OVERLAYS:
        write_credentials(target / "overlays" / overlay)
    return target


def kustomize_build(kustomize: Path, directory: Path) -> list[Obj]:
    proc = subprocess.run(
        [str(kustomize), "build", str(directory)],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, f"kustomize build {directory.name}:\n{proc.stderr}"
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


@pytest.fixture(scope="module")
def built(kustomize: Path, k8s_copy: Path) -> dict[str, list[Obj]]:
    return {o: kustomize_build(kustomize, k8s_copy / "overlays" / o) for o in OVERLAYS}


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("k8s_version", K8S_VERSIONS)
def test_core_objects_match_the_kubernetes_schemas(
    built: dict[str, list[Obj]], overlay: str, k8s_version: str
) -> None:
    errors = []
    for obj in built[overlay]:
        if obj["apiVersion"].split("/")[0] in CRD_GROUPS:
            continue
        try:
            kubernetes_validate.validate(obj, k8s_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{kind_of(obj)} at {list(exc.path)}: {exc.message}")
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_platform_services_are_all_there(built: dict[str, list[Obj]], overlay: str) -> None:
    objs = built[overlay]
    one(objs, "Namespace", NAMESPACE)
    for name in ("kafka", "minio", "postgres"):
        one(objs, "StatefulSet", name)
        one(objs, "Service", name)
    assert one(objs, "Service", "kafka-headless")["spec"]["clusterIP"] == "None"
    one(objs, "Job", "minio-bucket-init")
    one(objs, "FlinkDeployment", "ticklake-flink")
    for obj in objs:
        labels = obj["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/part-of") == "ticklake", kind_of(obj)
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == NAMESPACE, kind_of(obj)
    for name, template, _ in pod_templates(objs):
        labels = template["metadata"]["labels"]
        assert labels.get("app.kubernetes.io/part-of") == "ticklake", name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kafka_is_configured_like_the_local_stack(
    built: dict[str, list[Obj]], overlay: str
) -> None:
    kafka = one(built[overlay], "StatefulSet", "kafka")
    pod = kafka["spec"]["template"]["spec"]
    # the image turns KAFKA_* variables into broker properties; service links would add some
    assert pod["enableServiceLinks"] is False
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    settings = KafkaStackSettings()
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_TRANSACTION_MAX_TIMEOUT_MS"] == str(settings.transaction_max_timeout_ms)
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    factors = {k: v for k, v in env.items() if k.endswith(("REPLICATION_FACTOR", "_MIN_ISR"))}
    assert len(factors) >= 4
    assert set(factors.values()) == {"1"}
    assert one(built[overlay], "Service", "kafka-headless")["spec"]["publishNotReadyAddresses"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workload_containers_are_limited_probed_and_unprivileged(
    built: dict[str, list[Obj]], overlay: str
) -> None:
    templates = list(pod_templates(built[overlay]))
    assert len(templates) >= 4
    for name, template, long_running in templates:
        pod = template["spec"]
        pod_context = pod.get("securityContext", {})
        for c in pod.get("initContainers", []) + pod["containers"]:
            where = f"{overlay}: {name}/{c['name']}"
            assert image_is_pinned(c["image"]), f"{where}: image {c['image']} is not pinned"
            resources = c.get("resources", {})
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(bound, {})), f"{where}: {bound}"
            if long_running and c in pod["containers"]:
                assert "readinessProbe" in c, f"{where}: no readinessProbe"
                assert "livenessProbe" in c, f"{where}: no livenessProbe"
            context = c.get("securityContext", {})
            assert context.get("allowPrivilegeEscalation") is False, where
            assert not context.get("privileged"), where
            assert "ALL" in context.get("capabilities", {}).get("drop", []), where
            non_root = context.get("runAsNonRoot", pod_context.get("runAsNonRoot"))
            assert non_root is True, f"{where}: not runAsNonRoot"
            assert context.get("runAsUser", pod_context.get("runAsUser", 1)) != 0, where
            # $(VAR) in an env value expands only variables defined before it
            defined: set[str] = set()
            for var in c.get("env", []):
                for ref in ENV_REFERENCE.findall(str(var.get("value", ""))):
                    assert ref in defined, f"{where}: {var['name']} uses $({ref}) before it is set"
                defined.add(var["name"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_flink_session_cluster(built: dict[str, list[Obj]], overlay: str) -> None:
    objs = built[overlay]
    fd = one(objs, "FlinkDeployment")
    assert fd["apiVersion"] == "flink.apache.org/v1beta1"
    spec = fd["spec"]
    for field in ("image", "flinkVersion", "serviceAccount", "flinkConfiguration"):
        assert spec.get(field), f"FlinkDeployment has no spec.{field}"
    assert "job" not in spec, "a session cluster has no job of its own"
    assert spec["flinkVersion"] == "v1_20"
    assert image_is_pinned(spec["image"])
    for role in ("jobManager", "taskManager"):
        assert {"cpu", "memory"} <= set(spec[role]["resource"]), role

    conf = spec["flinkConfiguration"]
    bucket = MinioStackSettings().buckets[0]
    assert conf["state.backend.type"] == "rocksdb"
    assert conf["execution.checkpointing.dir"] == f"s3://{bucket}/flink/checkpoints"
    assert conf["s3.endpoint"].startswith("http://minio")
    assert conf["s3.path.style.access"] == "true"
    assert conf["metrics.reporter.prom.factory.class"] == PROM_REPORTER
    assert conf["metrics.reporter.prom.port"] == "9249"
    assert conf["python.executable"] == "/opt/venv/bin/python"
    assert not [k for k in conf if re.search(r"secret|access-key|password", k)], conf

    template = spec["podTemplate"]
    assert template["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert template["metadata"]["annotations"]["prometheus.io/port"] == "9249"
    pod_context = template["spec"]["securityContext"]
    assert pod_context["runAsNonRoot"] is True
    for role, (labels, container) in flink_pod_specs(fd).items():
        assert labels["app.kubernetes.io/name"] == "flink", role
        assert "readinessProbe" in container, role
        assert "livenessProbe" in container, role
        assert container["securityContext"]["allowPrivilegeEscalation"] is False, role

    # the ServiceAccount and what the native session cluster's JobManager must be allowed
    account = one(objs, "ServiceAccount", spec["serviceAccount"])
    binding = one(objs, "RoleBinding")
    assert {"kind": "ServiceAccount", "name": account["metadata"]["name"]}.items() <= (
        binding["subjects"][0].items()
    )
    role_obj = one(objs, "Role", binding["roleRef"]["name"])
    granted = {
        (group, resource, verb)
        for rule in role_obj["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    for group, resource in (("", "pods"), ("", "configmaps"), ("apps", "deployments")):
        for verb in ("get", "list", "watch", "create", "update", "patch", "delete"):
            assert (group, resource, verb) in granted, f"flink may not {verb} {resource}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_credentials_come_only_from_the_generated_secret(
    built: dict[str, list[Obj]], overlay: str
) -> None:
    objs = built[overlay]
    secrets = [o for o in objs if o["kind"] == "Secret"]
    assert [s["metadata"]["name"] for s in secrets] == [CREDENTIALS_SECRET]
    example = parse_env_file(K8S_DIR / "overlays" / overlay / "credentials.env.example")
    keys = set(secrets[0]["data"])
    assert keys == set(example)
    used = set()
    for where, c in all_containers(objs):
        for var in c.get("env", []):
            if SECRETISH.search(var["name"]):
                assert "value" not in var, f"{where}: {var['name']} is a literal"
            ref = var.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["name"] == CREDENTIALS_SECRET, where
                assert ref["key"] in keys, f"{where}: no key {ref['key']} in the Secret"
                used.add(ref["key"])
        for source in c.get("envFrom", []):
            assert source.get("secretRef", {}).get("name") in (None, CREDENTIALS_SECRET), where
    assert used == keys, f"Secret keys nobody reads: {keys - used}"


def test_credentials_files_are_gitignored() -> None:
    paths = [f"deploy/k8s/overlays/{o}/credentials.env" for o in OVERLAYS]
    paths.append("deploy/compose.env")
    for path in paths:
        proc = subprocess.run(
            ["git", "check-ignore", "-q", path], cwd=ROOT, check=False, capture_output=True
        )
        assert proc.returncode == 0, f"{path} is not gitignored"
    for overlay in OVERLAYS:
        example = parse_env_file(K8S_DIR / "overlays" / overlay / "credentials.env.example")
        for key, value in example.items():
            if SECRETISH.search(key):
                assert value == "", f"{overlay}/credentials.env.example carries {key}"


def test_production_is_sized_above_local(built: dict[str, list[Obj]]) -> None:
    def sizes(objs: list[Obj]) -> dict[str, float]:
        fd = one(objs, "FlinkDeployment")["spec"]
        conf = fd["flinkConfiguration"]
        out = {
            "taskmanager memory": flink_megabytes(fd["taskManager"]["resource"]["memory"]),
            "warm taskmanagers": int(conf["slotmanager.number-of-slots.min"])
            / int(conf["taskmanager.numberOfTaskSlots"]),
        }
        for name in ("kafka", "minio", "postgres"):
            sts = one(objs, "StatefulSet", name)["spec"]
            limits = sts["template"]["spec"]["containers"][0]["resources"]["limits"]
            claim = sts["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]
            out[f"{name} memory"] = k8s_bytes(limits["memory"])
            out[f"{name} storage"] = k8s_bytes(claim["storage"])
        return out

    local, production = sizes(built["local"]), sizes(built["production"])
    for key, value in local.items():
        assert production[key] > value, f"{key}: production {production[key]} <= local {value}"
    assert local["warm taskmanagers"] >= 1


def test_an_image_override_reaches_the_flink_deployment(
    kustomize: Path, k8s_copy: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "k8s"
    shutil.copytree(k8s_copy, copy)
    overlay = copy / "overlays" / "production"
    image = "registry.test/ticklake/flink:9.9.9"
    subprocess.run(
        [str(kustomize), "edit", "set", "image", f"ticklake/flink={image}"],
        cwd=overlay, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    assert one(kustomize_build(kustomize, overlay), "FlinkDeployment")["spec"]["image"] == image


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies(built: dict[str, list[Obj]], overlay: str) -> None:
    objs = built[overlay]
    policies = [o for o in objs if o["kind"] == "NetworkPolicy"]

    # a default deny for ingress
    assert any(
        p["spec"]["podSelector"] == {}
        and "Ingress" in p["spec"]["policyTypes"]
        and not p["spec"].get("ingress")
        for p in policies
    ), "no default-deny ingress policy"
    # no rule opens a port to every source, every namespace or an address range
    for p in policies:
        for rule in p["spec"].get("ingress") or []:
            assert rule.get("from"), f"{kind_of(p)} admits every source"
            for peer in rule["from"]:
                assert "ipBlock" not in peer, kind_of(p)
                assert peer.get("namespaceSelector", {"x": 1}) != {}, f"{kind_of(p)}: all ns"

    # the user-container policy targets only the relay, on its two ports
    user_policies = [
        p
        for p in policies
        for rule in p["spec"].get("ingress") or []
        for peer in rule.get("from") or []
        if "ticklake.io/role" in (peer.get("namespaceSelector") or {}).get("matchLabels", {})
    ]
    assert len(user_policies) == 1
    relay_policy = user_policies[0]
    assert relay_policy["spec"]["podSelector"] == {
        "matchLabels": {"app.kubernetes.io/name": "relay"}
    }
    (rule,) = relay_policy["spec"]["ingress"]
    assert {p["port"] for p in rule["ports"]} == RELAY_PORTS

    # the pods of the system and their ports
    ns = {"kubernetes.io/metadata.name": NAMESPACE}
    pods: dict[str, tuple[dict[str, str], set[int]]] = {}
    for name, template, _ in pod_templates(objs):
        ports = {
            p["containerPort"] for c in template["spec"]["containers"] for p in c.get("ports", [])
        }
        pods[name] = (template["metadata"]["labels"], ports)
    flink = flink_pod_specs(one(objs, "FlinkDeployment"))
    pods["jobmanager"] = (flink["jobManager"][0], {6123, 6124, 8081, 9249})
    pods["taskmanager"] = (flink["taskManager"][0], {6122, 9249, 40123})
    relay = {"app.kubernetes.io/name": "relay", "app.kubernetes.io/part-of": "ticklake"}
    pods["relay (later issue)"] = (relay, RELAY_PORTS | {9100})
    sts = {n.split("/")[1]: labels for n, (labels, _) in pods.items() if n.startswith("State")}
    job = next(labels for n, (labels, _) in pods.items() if n.startswith("Job/"))
    jm, tm = flink["jobManager"][0], flink["taskManager"][0]

    def allowed(target: str, port: int, source_ns: dict[str, str], source: dict[str, str]) -> bool:
        return ingress_allowed(policies, pods[target][0], port, source_ns, source)

    # user containers: the relay's two ports, nothing else anywhere
    for target, (_, ports) in pods.items():
        for port in ports:
            expected = target.startswith("relay") and port in RELAY_PORTS
            assert allowed(target, port, USER_CONTAINERS_NS, {}) is expected, (target, port)
    # what the system needs
    needed = [
        ("StatefulSet/kafka", 9092, jm),
        ("StatefulSet/kafka", 9092, tm),
        ("StatefulSet/kafka", 9093, sts["kafka"]),
        ("StatefulSet/minio", 9000, tm),
        ("StatefulSet/minio", 9000, jm),
        ("StatefulSet/minio", 9000, job),
        ("StatefulSet/postgres", 5432, jm),
        ("StatefulSet/postgres", 5432, tm),
        ("jobmanager", 6123, tm),
        ("jobmanager", 6124, tm),
        ("taskmanager", 40123, tm),
        ("taskmanager", 6122, jm),
    ]
    for target, port, source in needed:
        assert allowed(target, port, ns, source), f"{source} cannot reach {target}:{port}"
    operator = {"kubernetes.io/metadata.name": "flink-operator"}
    monitoring = {"kubernetes.io/metadata.name": "monitoring"}
    assert allowed("jobmanager", 8081, operator, {})
    assert allowed("taskmanager", 9249, monitoring, {})
    # and what it does not: an unlabelled pod of the namespace, the bucket job beyond MinIO
    assert not allowed("StatefulSet/kafka", 9092, ns, {})
    assert not allowed("StatefulSet/postgres", 5432, ns, job)
    assert not allowed("StatefulSet/kafka", 9092, monitoring, {})
    assert not allowed("taskmanager", 9249, operator, {})
