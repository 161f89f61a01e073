"""Drain the stderr of PyFlink's gateway JVM, which PyFlink pipes and then never reads.

A job run on the embedded MiniCluster runs inside the JVM that PyFlink starts for its py4j
gateway (``pyflink.java_gateway.launch_gateway``). PyFlink starts that JVM with
``stderr=PIPE`` and reads the pipe only when the JVM dies before it is up. Everything the
JVM writes to stderr afterwards (a library's printed stack trace, ``System.err``, and the
warnings of Python functions in thread mode, which run inside that JVM) piles up in the
pipe; at 64 KiB the writing thread blocks for good, and the task it belongs to with it.

:func:`drain_gateway_stderr` wraps PyFlink's launcher so that a daemon thread copies the
JVM's stderr to this process's stderr as it comes. Call it before the first table or
stream environment is created. Under ``flink run`` (a cluster) the gateway is the Flink
client's, not started here, and the wrapper is never called. If the JVM dies during
start-up, its last words reach this process's stderr through that thread, and PyFlink's
own error may quote less of them.
"""

from __future__ import annotations

import array
import atexit
import fcntl
import os
import sys
import termios
import threading
import time
from typing import IO, Any

THREAD_NAME = "ticklake-gateway-stderr"
#: The longest this process waits at exit for the JVM's last stderr lines to be copied.
SETTLE_TIMEOUT_S = 2.0
#: Set on the wrapper, so that installing twice wraps once.
_MARK = "_ticklake_drains_stderr"

_lock = threading.Lock()


class _Drain:
    """Copies a pipe to a sink; knows whether anything written to the pipe is still unsent."""

    def __init__(self, source: IO[bytes], sink: IO[bytes]) -> None:
        self.fd = source.fileno()
        self.sink = sink
        self.taken = 0
        self.sent = 0

    def run(self) -> None:
        # Raw reads of the descriptor: no buffer of our own that `pending` cannot see.
        while chunk := os.read(self.fd, 65_536):
            self.taken += len(chunk)
            try:
                self.sink.write(chunk)
                self.sink.flush()
            except (OSError, ValueError):  # a closed or broken sink: keep reading
                pass
            self.sent += len(chunk)

    def pending(self) -> int:
        """Bytes in the pipe (``FIONREAD``) plus bytes taken and not yet sent."""
        try:
            waiting = array.array("i", [0])
            fcntl.ioctl(self.fd, termios.FIONREAD, waiting, True)
        except OSError:  # closed: nothing more will come
            return self.taken - self.sent
        return waiting[0] + self.taken - self.sent

    def settle(self, timeout_s: float = SETTLE_TIMEOUT_S) -> None:
        """Wait (at most ``timeout_s``) until what the JVM wrote so far has been sent."""
        deadline = time.monotonic() + timeout_s
        quiet = 0
        while quiet < 2 and time.monotonic() < deadline:  # twice: a read in progress
            quiet = quiet + 1 if self.pending() == 0 else 0
            time.sleep(0.02)


def start_drain(source: IO[bytes], sink: IO[bytes]) -> threading.Thread:
    """Copy ``source`` to ``sink`` on a daemon thread until ``source`` ends.

    A failing ``sink`` (closed, broken pipe) does not stop the copy: the source is still
    read to its end, so its writer never blocks. At exit, this process waits (at most
    ``SETTLE_TIMEOUT_S``) until what is already in the pipe is copied: a failing job's
    last lines are the ones that matter.
    """
    drain = _Drain(source, sink)
    thread = threading.Thread(target=drain.run, name=THREAD_NAME, daemon=True)
    thread.start()
    atexit.register(drain.settle)
    return thread


def _stderr_bytes() -> IO[bytes]:
    """This process's stderr as bytes, even where ``sys.stderr`` was replaced by a text-only
    stream: then the file descriptor 2 itself."""
    buffer = getattr(sys.stderr, "buffer", None)
    return buffer if buffer is not None else open(2, "wb", closefd=False)


def drain_gateway_stderr() -> None:
    """Make every gateway JVM PyFlink starts in this process have its stderr drained."""
    with _lock:
        from pyflink import java_gateway

        launch = java_gateway.launch_gateway_server_process
        if getattr(launch, _MARK, False):
            return

        def launch_and_drain(env: Any, args: Any) -> Any:
            proc = launch(env, args)
            if proc.stderr is not None:
                start_drain(proc.stderr, _stderr_bytes())
            return proc

        setattr(launch_and_drain, _MARK, True)
        java_gateway.launch_gateway_server_process = launch_and_drain
