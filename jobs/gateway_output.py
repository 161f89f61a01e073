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

import sys
import threading
from typing import IO, Any

THREAD_NAME = "ticklake-gateway-stderr"
#: Set on the wrapper, so that installing twice wraps once.
_MARK = "_ticklake_drains_stderr"

_lock = threading.Lock()


def start_drain(source: IO[bytes], sink: IO[bytes]) -> threading.Thread:
    """Copy ``source`` to ``sink`` on a daemon thread until ``source`` ends.

    A failing ``sink`` (closed, broken pipe) does not stop the copy: the source is still
    read to its end, so its writer never blocks.
    """

    def copy() -> None:
        for chunk in iter(lambda: source.read1(65_536), b""):  # type: ignore[attr-defined]
            try:
                sink.write(chunk)
                sink.flush()
            except (OSError, ValueError):
                pass

    thread = threading.Thread(target=copy, name=THREAD_NAME, daemon=True)
    thread.start()
    return thread


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
                start_drain(proc.stderr, sys.stderr.buffer)
            return proc

        setattr(launch_and_drain, _MARK, True)
        java_gateway.launch_gateway_server_process = launch_and_drain
