"""The hook's HTTP connections: a stop holds even for a request still connecting.

A stop ends every wait of the hook at once, but a request that is still resolving the host name, opening
its TCP connection or in its TLS handshake cannot be interrupted from another thread. Without a check it
would go out once connected, seconds after the task ended. Every connection of the hook's session
therefore looks at the stop once it is connected and before the request's first byte is written.
"""

from __future__ import annotations

from typing import Any, Protocol

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import NewConnectionError


class StoppedWhileConnecting(NewConnectionError):
    """The hook was stopped while this connection was being made: nothing was sent on it."""


def stopped_while_connecting(exc: BaseException) -> bool:
    """Whether a ``requests`` error is a connection that refused to carry its request after a stop."""
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, StoppedWhileConnecting) or isinstance(exc, StoppedWhileConnecting)


class _Stop(Protocol):
    @property
    def stopped(self) -> bool: ...


def stoppable_adapter(stop: _Stop, pool_size: int) -> HTTPAdapter:
    """An adapter whose new connections refuse to carry a request once ``stop.stopped`` is true."""

    def check(connection: HTTPConnection) -> None:
        if stop.stopped:
            connection.close()
            raise StoppedWhileConnecting(connection, "the run was stopped while connecting; nothing was sent")

    class _HTTPConnection(HTTPConnection):
        def connect(self) -> None:
            super().connect()
            check(self)

    class _HTTPSConnection(HTTPSConnection):
        def connect(self) -> None:
            super().connect()  # TCP connect and TLS handshake
            check(self)

    class _HTTPPool(HTTPConnectionPool):
        ConnectionCls = _HTTPConnection

    class _HTTPSPool(HTTPSConnectionPool):
        ConnectionCls = _HTTPSConnection

    class _Adapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}

    # max_retries=0: the hook's retry policy decides every retry, urllib3 none.
    return _Adapter(pool_connections=2, pool_maxsize=pool_size, max_retries=0)
