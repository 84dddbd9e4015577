"""The hook's HTTP connections: a stop holds even for a request still connecting, and an answer that
drips in slowly ends at its deadline.

- A stop ends every wait of the hook at once, but a request that is still resolving the host name,
  opening its TCP connection or in its TLS handshake cannot be interrupted from another thread. Without
  a check it would go out once connected, seconds after the task ended. Every connection of the hook's
  session therefore looks at the stop once it is connected and before the request's first byte goes.
- A read timeout bounds each ``recv``, not the answer: a server that sends a byte every few seconds
  would hold a worker until the task's ``execution_timeout``. Each answer must arrive whole within the
  read timeout of the request being sent; past it, the read fails like any read timeout.
"""

from __future__ import annotations

import os
import socket
import time
from functools import lru_cache
from typing import Any, Protocol

import requests
from requests.adapters import HTTPAdapter
from requests.auth import AuthBase
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


class _DeadlineSocket:
    """A connected socket whose reads end at the current answer's deadline, however slowly it drips."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        # socket.socket's bookkeeping of the files made from it, kept on this object as makefile() runs
        # here: a close while a file is open (http.client closes a connection whose answer says
        # "Connection: close" before the body is read) must wait for the file, as a socket's does.
        self._io_refs = 0
        self._closed = False
        self.deadline = float("inf")
        self.seconds = 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def _bound(self) -> None:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"the answer did not arrive whole within {self.seconds:g} s")
        current = self._sock.gettimeout()
        if current is None or current > remaining:
            self._sock.settimeout(remaining)

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        self._bound()
        return self._sock.recv_into(buffer, nbytes, flags)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        self._bound()
        return self._sock.recv(bufsize, flags)

    def makefile(self, *args: Any, **kwargs: Any) -> Any:
        # socket.socket's own makefile, over this object, so the file's reads come through _bound().
        return socket.socket.makefile(self, *args, **kwargs)  # type: ignore[call-overload]

    def _decref_socketios(self) -> None:
        if self._io_refs > 0:
            self._io_refs -= 1
        if self._closed and self._io_refs == 0:
            self._sock.close()

    def close(self) -> None:
        self._closed = True
        if self._io_refs == 0:
            self._sock.close()


def _start_answer(connection: HTTPConnection) -> None:
    """The request is sent: its answer must now arrive within the read timeout."""
    sock = connection.sock
    seconds = connection.timeout
    if isinstance(sock, _DeadlineSocket) and isinstance(seconds, int | float):
        sock.seconds = float(seconds)
        sock.deadline = time.monotonic() + float(seconds)


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
            self.sock = _DeadlineSocket(self.sock)

        def getresponse(self) -> Any:
            _start_answer(self)
            return super().getresponse()

    class _HTTPSConnection(HTTPSConnection):
        def connect(self) -> None:
            super().connect()  # TCP connect and TLS handshake
            check(self)
            self.sock = _DeadlineSocket(self.sock)

        def getresponse(self) -> Any:
            _start_answer(self)
            return super().getresponse()

    class _HTTPPool(HTTPConnectionPool):
        ConnectionCls = _HTTPConnection

    class _HTTPSPool(HTTPSConnectionPool):
        ConnectionCls = _HTTPSConnection

    pools = {"http": _HTTPPool, "https": _HTTPSPool}

    class _Adapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = pools

        def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
            # Through an HTTP(S)_PROXY, requests builds a manager of its own: the same connections there.
            # (A SOCKS proxy's manager makes connections of another kind; those keep urllib3's.)
            manager = super().proxy_manager_for(proxy, **proxy_kwargs)
            if not proxy.lower().startswith("socks"):
                manager.pool_classes_by_scheme = pools
            return manager

    # max_retries=0: the hook's retry policy decides every retry, urllib3 none.
    return _Adapter(pool_connections=2, pool_maxsize=pool_size, max_retries=0)


@lru_cache(maxsize=256)
def prepared_template(
    method: str, url: str, headers: tuple[tuple[str, str], ...]
) -> requests.PreparedRequest:
    """
    A prepared request to copy for each call. ``Session.request`` would parse the URL, merge cookie jars
    and settings every time: about 0.15 ms, a tenth of a request's CPU in a bulk run.
    """
    return requests.Request(method, url, headers=dict(headers)).prepare()


def new_session(headers: dict[str, str], adapter: HTTPAdapter, auth: AuthBase) -> requests.Session:
    """A hook's one session: ``adapter`` for http and https, the calls' common headers, ``auth``."""
    session = requests.Session()
    session.auth = auth
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.headers.update(headers)
    # requests reads proxy and CA-bundle variables from the environment on every request (~1 ms of
    # CPU each, most of a request's cost); read them once per hook instead. No netrc either: the
    # Authorization header is ours alone.
    session.trust_env = False
    session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    return session
