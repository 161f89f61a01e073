"""Client-side socket set-up shared by the SDK: linger 0, fast reconnects, one context."""

from __future__ import annotations

from types import TracebackType
from typing import Self

import zmq

from ticklake.relay.settings import RelaySettings

Context = zmq.Context[zmq.Socket[bytes]]
Socket = zmq.Socket[bytes]


def client_socket(
    ctx: Context, kind: int, settings: RelaySettings, port: int, **options: int
) -> Socket:
    """A socket connected to one relay channel; ZMQ reconnects it by itself after a restart."""
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RECONNECT_IVL, settings.reconnect_ivl_ms)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, settings.reconnect_ivl_max_ms)
    for name, value in options.items():
        sock.setsockopt(getattr(zmq, name), value)
    sock.connect(settings.connect(port))
    return sock


def shared_context(ctx: Context | None) -> Context:
    return ctx if ctx is not None else zmq.Context.instance()


class SocketClient:
    """An SDK object owning one socket: ``close()`` and use as a context manager."""

    _sock: Socket

    def close(self) -> None:
        self._sock.close(linger=0)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
