"""Pinned downloads: jar sets from Maven Central (checksum-verified) and the MinIO build.

Jar sets are declared as Maven poms in ``stack/maven/NAME.xml``, resolved with
``mvn --strict-checksums dependency:copy-dependencies`` (Maven checks each file against the
repository's checksum) and then checked against our own pinned SHA-256 list in
``stack/maven/NAME.sha256``: the exact set of files, and the exact bytes of each.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ticklake.errors import ChecksumMismatchError, DownloadError, ToolMissingError

log = logging.getLogger(__name__)

MAVEN_DIR = Path(__file__).resolve().parent / "maven"


Progress = Callable[[str], None]


def run_with_heartbeat(
    cmd: list[str], what: str, progress: Progress | None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a long command, reporting that it is still going every 15 s."""
    done = threading.Event()
    t0 = time.monotonic()

    def beat() -> None:
        while not done.wait(15):
            if progress:
                progress(f"{what}: still working ({time.monotonic() - t0:.0f}s)")

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        return subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    finally:
        done.set()
        thread.join()


def require_tool(name: str, what: str, install_hint: str) -> str:
    """Absolute path of an executable on PATH, or a ToolMissingError saying how to get it."""
    path = shutil.which(name)
    if path is None:
        raise ToolMissingError(f"`{name}` ({what}) is not on PATH", hint=install_hint)
    return path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_lock(lock: Path) -> dict[str, str]:
    """``sha256sum``-format file -> {file name: sha256}."""
    pins: dict[str, str] = {}
    for raw in lock.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        digest, name = line.split(maxsplit=1)
        pins[name.lstrip("*")] = digest
    return pins


def verify_jars(directory: Path, pins: dict[str, str]) -> None:
    """Raise ChecksumMismatchError unless ``directory`` holds exactly the pinned jars."""
    if not pins:
        raise ChecksumMismatchError(
            "no SHA-256 pins to verify against", hint="the .sha256 file is empty or missing"
        )
    present = {p.name for p in directory.glob("*.jar")}
    missing = sorted(set(pins) - present)
    extra = sorted(present - set(pins))
    if missing or extra:
        raise ChecksumMismatchError(
            f"jar set in {directory} differs from its pins",
            detail=f"missing: {missing or '-'}\nunexpected: {extra or '-'}",
            hint="the pom and its .sha256 list disagree; regenerate the list with "
            "`ticklake setup --update-pins` after reviewing the pom change",
        )
    for name, digest in sorted(pins.items()):
        actual = sha256_of(directory / name)
        if actual != digest:
            raise ChecksumMismatchError(
                f"{name} does not match its pinned SHA-256",
                detail=f"expected {digest}\nactual   {actual}",
                hint=f"delete {directory} and run `ticklake setup` again; if it persists, the "
                "repository or a proxy serves different bytes than were pinned",
            )


def _mvn_copy(pom: Path, out_dir: Path, progress: Progress | None) -> None:
    mvn = require_tool("mvn", "Apache Maven, used to fetch pinned jars", "apt-get install -y maven")
    cmd = [
        mvn, "-B", "-q", "--strict-checksums", "-f", str(pom),
        "dependency:copy-dependencies", "-DincludeScope=runtime",
        f"-DoutputDirectory={out_dir}",
    ]  # fmt: skip
    proc = run_with_heartbeat(cmd, f"fetching {pom.stem} jars", progress)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-25:])
        raise DownloadError(
            f"Maven could not fetch the jars of {pom.name}",
            detail=tail,
            hint="check that Maven Central is reachable (e.g. `mvn -B dependency:get "
            "-Dartifact=junit:junit:4.13.2`) and re-run; ~/.m2 caches what already arrived",
        )


def maven_jar_set(
    name: str, cache: Path, *, update_pins: bool = False, progress: Progress | None = None
) -> Path:
    """The verified directory of jars declared by ``stack/maven/{name}.xml``.

    Cached under ``cache/jars/{name}-{pom hash}``; a second call only re-verifies sizes.
    """
    cache = cache.resolve()
    pom = MAVEN_DIR / f"{name}.xml"
    lock = MAVEN_DIR / f"{name}.sha256"
    pom_hash = hashlib.sha256(pom.read_bytes()).hexdigest()[:12]
    target = cache / "jars" / f"{name}-{pom_hash}"
    stamp = target / ".verified"
    if not update_pins and stamp.is_file() and stamp.read_text() == lock.read_text():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        if progress:
            progress(f"fetching the {name} jars from Maven Central")
        _mvn_copy(pom, tmp, progress)
        if update_pins:
            lines = [f"{sha256_of(p)}  {p.name}" for p in sorted(tmp.glob("*.jar"))]
            lock.write_text(
                f"# SHA-256 pins for stack/maven/{name}.xml; regenerate with "
                "`ticklake setup --update-pins`\n" + "\n".join(lines) + "\n"
            )
        verify_jars(tmp, read_lock(lock))
        (tmp / ".verified").write_text(lock.read_text())
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def go_install(
    module: str, version: str, binary: str, cache: Path, progress: Progress | None = None
) -> Path:
    """Build a Go program at a pinned version through the Go module proxy, once.

    Module contents are verified by Go itself against go.sum and the checksum database.
    """
    bin_dir = cache / "bin" / f"{binary}-{version}"
    exe = bin_dir / binary
    if exe.is_file() and os.access(exe, os.X_OK):
        return exe
    go = require_tool("go", "the Go toolchain, used to build MinIO", "install Go >= 1.24")
    bin_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, GOBIN=str(bin_dir), CGO_ENABLED="0", GOFLAGS="-trimpath")
    if progress:
        progress(f"building {binary} from {module}@{version} (minutes the first time)")
    proc = run_with_heartbeat([go, "install", f"{module}@{version}"], f"building {binary}",
                              progress, env)  # fmt: skip
    if proc.returncode != 0 or not exe.is_file():
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-25:])
        raise DownloadError(
            f"could not build {module}@{version}",
            detail=tail,
            hint="check that the Go module proxy is reachable (`go env GOPROXY`) and re-run; "
            "the Go build cache makes a retry faster",
        )
    return exe
