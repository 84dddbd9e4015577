"""`kibo-emulator` in a process of its own, for benchmarks and the release check."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import requests

from devtools.airflow_local import free_port


@contextmanager
def emulator_process(*args: str, executable: list[str] | None = None) -> Iterator[str]:
    """Start the emulator on a free 127.0.0.1 port, yield its URL once it answers, always stop it."""
    port = free_port()
    command = executable or [sys.executable, "-m", "airflow_provider_kibo_cancel.emulator"]
    proc = subprocess.Popen([*command, "--port", str(port), *args], stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"{url}/_emulator/state", timeout=1)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
