"""A kill stops an operator's requests on every Airflow 3 release.

Airflow 3.1+'s task runner calls ``on_kill`` when its process gets SIGTERM (a kill, "mark failed", a
timeout). Airflow 3.0's installs no SIGTERM handler at all: the process died on the spot, with no stop,
no summary and requests possibly on the wire. Where nothing handles SIGTERM, an operator installs, for
the length of its ``execute``, a handler that does what 3.1+ does: call ``on_kill``.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Protocol


class _Killable(Protocol):
    def on_kill(self) -> None: ...


@contextmanager
def on_kill_at_sigterm(operator: _Killable) -> Iterator[None]:
    """While the block runs, SIGTERM calls ``operator.on_kill()`` if no one else handles SIGTERM."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield  # Airflow's task runner (3.1+), or the user's own handler, is in charge
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        operator.on_kill()

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
