"""Flink 1.20.5 from the PyFlink wheel: the embedded MiniCluster and a standalone cluster.

Connector jars (Kafka, Iceberg, AWS bundle, PostgreSQL JDBC, Hadoop client, Avro) are one
pinned, verified jar set. The same directory serves both modes through ``HADOOP_CLASSPATH``:
PyFlink's gateway adds it to the JVM that runs the MiniCluster, and Flink's own start
scripts add it to the JobManager and TaskManager classpath. Jars on the parent classpath
(not the user classloader) also keep the JDBC driver visible to Iceberg's catalog.
The S3 filesystem plugin lives in ``plugins/s3-fs-hadoop/`` of the cluster's plugin dir.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import ticklake.jobs
from ticklake.errors import DownloadError, ToolMissingError
from ticklake.stack.components.base import Component, Health
from ticklake.stack.context import StackContext
from ticklake.stack.downloads import maven_jar_set, require_tool
from ticklake.stack.process import ManagedProcess, ensure_port_free
from ticklake.stack.settings import LOOPBACK


def flink_python(ctx: StackContext) -> Path:
    """The Flink job environment's interpreter."""
    env = os.environ.get("TICKLAKE_FLINK_PYTHON")
    return Path(env) if env else ctx.home / "venvs" / "flink" / "bin" / "python"


def pyflink_home(ctx: StackContext) -> Path:
    """``site-packages/pyflink`` of the Flink job environment (holds bin/, lib/, opt/)."""
    python = flink_python(ctx)
    venv = python.parent.parent
    found = sorted(venv.glob("lib/python3*/site-packages/pyflink/bin/flink"))
    if not found:
        raise ToolMissingError(
            f"PyFlink is not installed in the Flink job environment ({venv})",
            hint="run `bin/ticklake setup`, which creates it from uv.lock",
        )
    return found[0].parent.parent


def connector_jars(ctx: StackContext) -> Path:
    return maven_jar_set("flink-connectors", ctx.cache, progress=ctx.progress)


#: Java sources of ticklake's Flink SQL functions (``ticklake.jobs.functions`` names them).
FUNCTIONS_SRC = Path(ticklake.jobs.__file__).resolve().parent / "java" / "src"
#: Java sources of ticklake's patches of dependency classes, loaded in their place.
PATCHES_SRC = Path(ticklake.jobs.__file__).resolve().parent / "java" / "patches"
#: ``off`` leaves the patches off the classpath (the dependencies' own classes): for A/B
#: benchmarks, or to rule a patch out when chasing a bug.
PATCHES_ENV = "TICKLAKE_JAVA_PATCHES"


def functions_jar(ctx: StackContext) -> Path:
    """ticklake's Flink SQL functions and its relay connector (``'connector' =
    'ticklake-relay'``, JeroMQ from the connector jars), compiled against the wheel's Flink
    jars and the connector jars, once.

    Cached under ``cache/jars/ticklake-functions-{hash}``; the hash covers the sources and
    the jars compiled against, so a change of either builds a new jar.
    """
    lib = pyflink_home(ctx) / "lib"
    jars = [*sorted(lib.glob("*.jar")), *sorted(connector_jars(ctx).glob("*.jar"))]
    what = "ticklake's Flink SQL functions and relay connector (jobs/java/src)"
    return _compiled_jar(ctx, "ticklake-functions", FUNCTIONS_SRC, jars, what)


def patches_jar(ctx: StackContext) -> Path:
    """ticklake's patched copies of dependency classes (``jobs/java/patches``), compiled
    against the wheel's Flink jars and the connector jars, once.

    ``job_environment`` puts this jar first on the classpath, so its classes load in place
    of the originals: today Iceberg's ``PartitionKeySelector``, whose per-row partition path
    cost the dedup + OHLC job 15% of its CPU (``docs/architecture.md`` section 4). A new
    Iceberg version changes the connector jars, hence the hash, and the patch is compiled
    against it again: an incompatible change fails here, at set-up, not in a job.
    """
    lib = pyflink_home(ctx) / "lib"
    jars = [*sorted(lib.glob("*.jar")), *sorted(connector_jars(ctx).glob("*.jar"))]
    what = "ticklake's patches of dependency classes (jobs/java/patches)"
    return _compiled_jar(ctx, "ticklake-patches", PATCHES_SRC, jars, what)


def _compiled_jar(
    ctx: StackContext, name: str, src_dir: Path, classpath: list[Path], what: str
) -> Path:
    """``javac`` the sources under ``src_dir`` against ``classpath`` into a cached jar, with
    the other files under ``src_dir`` (``META-INF/services`` registrations) as resources."""
    sources = sorted(src_dir.rglob("*.java"))
    resources = sorted(p for p in src_dir.rglob("*") if p.is_file() and p.suffix != ".java")
    digest = hashlib.sha256()
    for src in [*sources, *resources]:
        digest.update(src.relative_to(src_dir).as_posix().encode())
        digest.update(src.read_bytes())
    for jar in classpath:
        digest.update(jar.name.encode())
    target = ctx.cache.resolve() / "jars" / f"{name}-{digest.hexdigest()[:12]}"
    jar_path = target / f"{name}.jar"
    if jar_path.is_file():
        return jar_path
    jdk_hint = "apt-get install -y openjdk-17-jdk-headless"
    javac = require_tool("javac", f"the JDK's compiler, builds {what}", jdk_hint)
    jar_tool = require_tool("jar", "the JDK's jar tool", jdk_hint)
    ctx.progress(f"compiling {what}")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=target.parent) as tmp:
        classes = Path(tmp) / "classes"
        built = Path(tmp) / f"{name}.jar"
        steps = [
            [javac, "--release", "11", "-proc:none", "-Xlint:all", "-Werror", "-d", str(classes),
             "-cp", ":".join(map(str, classpath)), *map(str, sources)],
            [jar_tool, "--create", "--file", str(built), "-C", str(classes), "."],
        ]  # fmt: skip
        for cmd in steps:
            if cmd[0] == jar_tool:
                for res in resources:
                    dest = classes / res.relative_to(src_dir)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(res, dest)
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode:
                raise DownloadError(
                    f"could not build {what} ({Path(cmd[0]).name} failed)",
                    detail=(proc.stdout + proc.stderr)[-4000:],
                    hint=f"check the sources under {src_dir} and the JDK (javac 11+)",
                )
        target.mkdir(exist_ok=True)
        os.replace(built, jar_path)
    return jar_path


def job_environment(ctx: StackContext) -> dict[str, str]:
    """Environment for a PyFlink process: connector jars and ticklake's functions jar on the
    gateway JVM classpath (and, through the start scripts, the cluster's)."""
    jars = [*sorted(connector_jars(ctx).glob("*.jar")), functions_jar(ctx)]
    if os.environ.get(PATCHES_ENV, "on").lower() not in ("off", "0", "false", "no"):
        # First: its classes replace the connector jars' own (``patches_jar``).
        jars.insert(0, patches_jar(ctx))
    classpath = ":".join(str(p) for p in jars)
    java_home = os.environ.get("JAVA_HOME")
    env = {"HADOOP_CLASSPATH": classpath, "PYFLINK_GATEWAY_DISABLED": "false"}
    if not java_home:
        java = shutil.which("java")
        if java:
            env["JAVA_HOME"] = str(Path(os.path.realpath(java)).parent.parent)
    return env


class FlinkEmbeddedComponent(Component):
    """The MiniCluster inside each job's process: nothing runs until a job does."""

    name = "flink"

    @property
    def processes(self) -> list[ManagedProcess]:
        return []

    @property
    def address(self) -> str:
        return "embedded MiniCluster (per job)"

    def install(self) -> None:
        require_tool("java", "Java 17, runs Flink", "apt-get install -y openjdk-17-jre-headless")
        pyflink_home(self.ctx)
        connector_jars(self.ctx)
        functions_jar(self.ctx)
        patches_jar(self.ctx)

    def start(self) -> None:
        """Nothing to start: each job brings its own MiniCluster."""

    def health(self) -> Health:
        try:
            home = pyflink_home(self.ctx)
            jars = connector_jars(self.ctx)
        except ToolMissingError as exc:
            return Health(False, exc.message)
        version = next(iter(sorted(home.glob("lib/flink-dist*.jar"))), Path("?")).stem
        return Health(True, f"{version}, {len(list(jars.glob('*.jar')))} connector jars")


class FlinkClusterComponent(Component):
    """A standalone JobManager + TaskManager from the wheel's scripts, checkpoints on MinIO."""

    name = "flink-cluster"
    optional = True

    @property
    def processes(self) -> list[ManagedProcess]:
        return [
            ManagedProcess("flink-jobmanager", self.ctx.run_dir, self.ctx.log_dir),
            ManagedProcess("flink-taskmanager", self.ctx.run_dir, self.ctx.log_dir),
        ]

    @property
    def address(self) -> str:
        return f"http://{LOOPBACK}:{self.ctx.settings.flink.rest_port}"

    @property
    def base(self) -> Path:
        return self.ctx.data_dir("flink-cluster")

    def install(self) -> None:
        FlinkEmbeddedComponent(self.ctx).install()
        plugin_src = maven_jar_set("flink-s3-plugin", self.ctx.cache, progress=self.ctx.progress)
        plugin_dir = self.base / "plugins" / "s3-fs-hadoop"
        plugin_dir.mkdir(parents=True, exist_ok=True)
        for jar in plugin_src.glob("*.jar"):
            target = plugin_dir / jar.name
            if not target.exists():
                shutil.copy2(jar, target)

    def _wheel_java_opts(self) -> str:
        """The JVM flags (--add-opens ...) the wheel's own config.yaml gives Java 17."""
        text = (pyflink_home(self.ctx) / "conf" / "config.yaml").read_text()
        match = re.search(r"^\s+all:\s*(--add-.*)$", text, re.MULTILINE)
        return match.group(1).strip() if match else ""

    def config_yaml(self) -> str:
        s = self.ctx.settings
        creds = self.ctx.credentials
        bucket = s.minio.buckets[0]
        conf = {
            "env.java.opts.all": self._wheel_java_opts(),
            "jobmanager.execution.failover-strategy": "region",
            "jobmanager.rpc.address": LOOPBACK,
            "jobmanager.rpc.port": s.flink.jobmanager_rpc_port,
            "jobmanager.bind-host": LOOPBACK,
            "jobmanager.memory.process.size": s.flink.jobmanager_memory,
            "taskmanager.bind-host": LOOPBACK,
            "taskmanager.host": LOOPBACK,
            "taskmanager.numberOfTaskSlots": s.flink.taskmanager_slots,
            "taskmanager.memory.process.size": s.flink.taskmanager_memory,
            "parallelism.default": 1,
            "rest.address": LOOPBACK,
            "rest.bind-address": LOOPBACK,
            "rest.port": s.flink.rest_port,
            "blob.server.port": "0",
            "taskmanager.rpc.port": "0",
            "taskmanager.data.port": 0,
            "state.backend.type": "rocksdb",
            "execution.checkpointing.dir": f"s3://{bucket}/flink/checkpoints",
            "execution.checkpointing.savepoint-dir": f"s3://{bucket}/flink/savepoints",
            "state.checkpoints.dir": f"s3://{bucket}/flink/checkpoints",
            "state.savepoints.dir": f"s3://{bucket}/flink/savepoints",
            "execution.checkpointing.incremental": True,
            "s3.endpoint": f"http://{LOOPBACK}:{s.minio.port}",
            "s3.path.style.access": True,
            "s3.access-key": s.minio.root_user,
            "s3.secret-key": creds.minio_password.get_secret_value(),
            "python.executable": str(flink_python(self.ctx)),
            "python.client.executable": str(flink_python(self.ctx)),
            "io.tmp.dirs": str(self.base / "tmp"),
            "web.upload.dir": str(self.base / "uploads"),
        }
        # YAML 1.2 flow values; JSON scalars are valid YAML.
        return "".join(f"{k}: {json.dumps(v)}\n" for k, v in conf.items())

    def _env(self) -> dict[str, str]:
        conf_dir = self.base / "conf"
        conf_dir.mkdir(parents=True, exist_ok=True)
        (self.base / "tmp").mkdir(exist_ok=True)
        (self.base / "uploads").mkdir(exist_ok=True)
        path = conf_dir / "config.yaml"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(self.config_yaml())
        home = pyflink_home(self.ctx)
        for name in ("log4j-console.properties", "log4j.properties", "log4j-cli.properties"):
            src = home / "conf" / name
            if src.is_file():
                shutil.copy2(src, conf_dir / name)
        env = job_environment(self.ctx)
        env.update(
            FLINK_HOME=str(home),
            FLINK_CONF_DIR=str(conf_dir),
            FLINK_PLUGINS_DIR=str(self.base / "plugins"),
            FLINK_LOG_DIR=str(self.ctx.log_dir),
        )
        return env

    def start(self) -> None:
        s = self.ctx.settings.flink
        ensure_port_free("Flink REST", LOOPBACK, s.rest_port, "TICKLAKE_STACK__FLINK__REST_PORT")
        ensure_port_free(
            "Flink JobManager RPC", LOOPBACK, s.jobmanager_rpc_port,
            "TICKLAKE_STACK__FLINK__JOBMANAGER_RPC_PORT",
        )  # fmt: skip
        env = self._env()
        bin_dir = pyflink_home(self.ctx) / "bin"
        jm, tm = self.processes
        jm.start(["bash", str(bin_dir / "jobmanager.sh"), "start-foreground"], env=env)
        tm.start(["bash", str(bin_dir / "taskmanager.sh"), "start-foreground"], env=env)

    def health(self) -> Health:
        url = f"{self.address}/overview"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback URL
                overview = json.load(resp)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            return Health(False, f"GET {url}: {exc}")
        tms = int(overview.get("taskmanagers", 0))
        slots = int(overview.get("slots-total", 0))
        detail = f"Flink {overview.get('flink-version', '?')}, {tms} TaskManager(s), {slots} slots"
        return Health(tms >= 1, detail)
