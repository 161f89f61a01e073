"""Pinned downloads: the jar-set verification and missing-tool errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from ticklake.errors import ChecksumMismatchError, ToolMissingError
from ticklake.stack.downloads import MAVEN_DIR, read_lock, require_tool, verify_jars


def make_jars(directory: Path, contents: dict[str, bytes]) -> dict[str, str]:
    directory.mkdir(parents=True, exist_ok=True)
    pins = {}
    for name, body in contents.items():
        (directory / name).write_bytes(body)
        pins[name] = hashlib.sha256(body).hexdigest()
    return pins


def test_matching_jars_verify(tmp_path: Path) -> None:
    pins = make_jars(tmp_path, {"a-1.jar": b"aaa", "b-2.jar": b"bbb"})
    verify_jars(tmp_path, pins)


def test_a_changed_byte_is_caught(tmp_path: Path) -> None:
    pins = make_jars(tmp_path, {"a-1.jar": b"aaa"})
    (tmp_path / "a-1.jar").write_bytes(b"aab")
    with pytest.raises(ChecksumMismatchError) as info:
        verify_jars(tmp_path, pins)
    assert "a-1.jar does not match its pinned SHA-256" in info.value.message
    assert pins["a-1.jar"] in (info.value.detail or "")


def test_missing_and_unexpected_jars_are_caught(tmp_path: Path) -> None:
    pins = make_jars(tmp_path, {"a-1.jar": b"aaa"})
    (tmp_path / "a-1.jar").unlink()
    (tmp_path / "evil-9.jar").write_bytes(b"x")
    with pytest.raises(ChecksumMismatchError) as info:
        verify_jars(tmp_path, pins)
    assert "a-1.jar" in (info.value.detail or "")
    assert "evil-9.jar" in (info.value.detail or "")


def test_empty_pins_never_verify(tmp_path: Path) -> None:
    with pytest.raises(ChecksumMismatchError):
        verify_jars(tmp_path, {})


@pytest.mark.parametrize("name", ["kafka", "flink-connectors", "flink-s3-plugin"])
def test_every_committed_jar_set_is_pinned(name: str) -> None:
    pins = read_lock(MAVEN_DIR / f"{name}.sha256")
    assert pins, f"{name}.sha256 pins nothing"
    assert all(len(d) == 64 and int(d, 16) >= 0 for d in pins.values())
    assert all(n.endswith(".jar") for n in pins)


def test_a_missing_tool_says_how_to_install_it() -> None:
    with pytest.raises(ToolMissingError) as info:
        require_tool("no-such-tool-ticklake", "a test tool", "apt-get install -y it")
    assert info.value.hint == "apt-get install -y it"
    assert info.value.exit_code == 4
