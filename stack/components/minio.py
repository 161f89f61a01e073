"""MinIO, built from its Go module at a pinned version, cached; buckets created at start.

The Go module proxy serves no ``RELEASE.*`` tag of github.com/minio/minio any more (each
answers 403 "not available"); it serves the final commit of the archived repository as the
pseudo-version pinned below. See docs/architecture.md.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import TYPE_CHECKING

from ticklake.stack.components.base import Component, Health
from ticklake.stack.downloads import go_install
from ticklake.stack.process import ensure_port_free
from ticklake.stack.settings import LOOPBACK

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MINIO_MODULE = "github.com/minio/minio"
MINIO_VERSION = "v0.0.0-20260212201848-7aac2a2c5b7c"


class MinioComponent(Component):
    name = "minio"

    @property
    def address(self) -> str:
        return f"http://{LOOPBACK}:{self.ctx.settings.minio.port}"

    def binary(self) -> str:
        return str(
            go_install(MINIO_MODULE, MINIO_VERSION, "minio", self.ctx.cache, self.ctx.progress)
        )

    def install(self) -> None:
        self.binary()

    def start(self) -> None:
        s = self.ctx.settings.minio
        ensure_port_free("MinIO", LOOPBACK, s.port, "TICKLAKE_STACK__MINIO__PORT")
        ensure_port_free(
            "MinIO console", LOOPBACK, s.console_port, "TICKLAKE_STACK__MINIO__CONSOLE_PORT"
        )
        data = self.ctx.data_dir("minio")
        data.mkdir(parents=True, exist_ok=True)
        env = {
            "MINIO_ROOT_USER": s.root_user,
            "MINIO_ROOT_PASSWORD": self.ctx.credentials.minio_password.get_secret_value(),
            "MINIO_BROWSER": "on",
            "MINIO_UPDATE": "off",
            "MINIO_CALLHOME_ENABLE": "off",
        }
        self.processes[0].start(
            [self.binary(), "server", str(data), "--quiet", "--anonymous",
             "--address", f"{LOOPBACK}:{s.port}",
             "--console-address", f"{LOOPBACK}:{s.console_port}"],
            env=env,
        )  # fmt: skip

    def health(self) -> Health:
        url = f"{self.address}/minio/health/live"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback URL
                ok = resp.status == 200
        except (urllib.error.URLError, OSError) as exc:
            return Health(False, f"GET {url}: {exc}")
        return Health(ok, "live" if ok else "not live")

    def s3_client(self) -> S3Client:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.address,
            aws_access_key_id=self.ctx.settings.minio.root_user,
            aws_secret_access_key=self.ctx.credentials.minio_password.get_secret_value(),
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
        )

    def prepare(self) -> None:
        client = self.s3_client()
        existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        for bucket in self.ctx.settings.minio.buckets:
            if bucket not in existing:
                client.create_bucket(Bucket=bucket)
