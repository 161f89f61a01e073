"""Apache Kafka 4.x: one combined KRaft broker+controller on loopback, from pinned jars.

The jars come from Maven Central through ``stack/maven/kafka.xml`` (checksum-pinned). The
broker is configured for Flink's exactly-once Kafka sink: ``transaction.max.timeout.ms`` is
above the sink's default transaction timeout (1 h).
"""

from __future__ import annotations

import base64
import uuid
from pathlib import Path

from ticklake.stack.components.base import Component, Health
from ticklake.stack.downloads import maven_jar_set, require_tool
from ticklake.stack.process import ensure_port_free
from ticklake.stack.settings import LOOPBACK

LOG4J2 = """\
Configuration:
  status: warn
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: INFO
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka
        level: INFO
      - name: org.apache.kafka
        level: INFO
      - name: kafka.request.logger
        level: WARN
      - name: state.change.logger
        level: WARN
      - name: kafka.log.LogCleaner
        level: WARN
"""


def new_cluster_id() -> str:
    """A random KRaft cluster id: 16 random bytes, URL-safe base64 without padding.

    Like Kafka's own ``Uuid.randomUuid()``, never one that starts with ``-``: about one id
    in 64 would, and a command line would then read it as an option (the storage tool's
    ``-t -E7S...`` failed with "expected one argument").
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


class KafkaComponent(Component):
    name = "kafka"

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.ctx.settings.kafka.port}"

    @property
    def config_dir(self) -> Path:
        return self.ctx.data_dir("kafka") / "config"

    @property
    def log_dirs(self) -> Path:
        return self.ctx.data_dir("kafka") / "kraft-logs"

    def jars(self) -> Path:
        return maven_jar_set("kafka", self.ctx.cache, progress=self.ctx.progress)

    def install(self) -> None:
        require_tool("java", "Java 17+, runs Kafka and Flink", "apt-get install -y openjdk-17-jre")
        self.jars()

    def server_properties(self) -> str:
        s = self.ctx.settings.kafka
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"{LOOPBACK}:{s.controller_port}",
            "listeners": f"PLAINTEXT://{LOOPBACK}:{s.port},CONTROLLER://{LOOPBACK}:{s.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{LOOPBACK}:{s.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.log_dirs),
            "num.partitions": "3",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "offsets.topic.replication.factor": "1",
            # One machine: small internal topics make the first group join and the first
            # transaction fast (no 50-partition coordinator load).
            "offsets.topic.num.partitions": "3",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "3",
            "share.coordinator.state.topic.num.partitions": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # Flink's exactly-once sink keeps transactions open up to its transaction.timeout.ms
            # (1 h by default); the broker must allow at least that.
            "transaction.max.timeout.ms": str(s.transaction_max_timeout_ms),
            "group.initial.rebalance.delay.ms": "0",
            # Topics are created explicitly (ticklake's topic registry); typos fail loudly.
            "auto.create.topics.enable": "false",
            "log.retention.hours": str(s.retention_hours),
            "log.segment.bytes": str(256 * 1024 * 1024),
            "num.network.threads": "2",
            "num.io.threads": "4",
            "num.recovery.threads.per.data.dir": "1",
            "background.threads": "4",
            "log.cleaner.threads": "1",
            "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
        }
        return "".join(f"{k}={v}\n" for k, v in props.items())

    def _cluster_id(self) -> str:
        path = self.ctx.data_dir("kafka") / "cluster.id"
        if path.is_file():
            return path.read_text().strip()
        cid = new_cluster_id()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(cid + "\n")
        return cid

    def _java(self, main: str, *args: str, heap: str = "256m") -> list[str]:
        return [
            require_tool("java", "Java 17+", "apt-get install -y openjdk-17-jre"),
            f"-Xms{heap}" if heap != "256m" else "-Xms64m", f"-Xmx{heap}",
            "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true",
            # Kafka's own shutdown hook logs; log4j2's would cut those lines off.
            "-Dlog4j2.shutdownHookEnabled=false",
            f"-Dlog4j2.configurationFile={self.config_dir / 'log4j2.yaml'}",
            f"-Dkafka.logs.dir={self.ctx.log_dir}",
            "-cp", f"{self.jars()}/*", main, *args,
        ]  # fmt: skip

    def configure(self) -> Path:
        import subprocess

        from ticklake.errors import StackError

        self.config_dir.mkdir(parents=True, exist_ok=True)
        props = self.config_dir / "server.properties"
        props.write_text(self.server_properties())
        (self.config_dir / "log4j2.yaml").write_text(LOG4J2)
        if not (self.log_dirs / "meta.properties").is_file():
            cmd = self._java(
                "kafka.tools.StorageTool", "format", "--standalone",
                f"--cluster-id={self._cluster_id()}", "-c", str(props),
            )  # fmt: skip
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise StackError(
                    "formatting Kafka's KRaft storage failed",
                    detail=(proc.stdout + proc.stderr)[-2000:],
                    hint=f"remove {self.ctx.data_dir('kafka')} to start from empty storage",
                )
        return props

    def start(self) -> None:
        s = self.ctx.settings.kafka
        ensure_port_free("Kafka", LOOPBACK, s.port, "TICKLAKE_STACK__KAFKA__PORT")
        ensure_port_free(
            "Kafka controller", LOOPBACK, s.controller_port,
            "TICKLAKE_STACK__KAFKA__CONTROLLER_PORT",
        )  # fmt: skip
        props = self.configure()
        self.processes[0].start(self._java("kafka.Kafka", str(props), heap=s.heap))

    def health(self) -> Health:
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        admin = AdminClient(
            {"bootstrap.servers": self.address, "socket.timeout.ms": 2000, "log_level": 0}
        )
        try:
            meta = admin.list_topics(timeout=2)
        except KafkaException as exc:
            return Health(False, f"metadata request failed: {exc.args[0]}")
        return Health(True, f"{len(meta.brokers)} broker(s), {len(meta.topics)} topic(s)")
