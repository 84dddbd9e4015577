"""The test harness's REST client (`devtools.airflow_local.AirflowStack.api`): a busy API server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
import requests

from devtools.airflow_local import AirflowEnv, AirflowStack


class SlowFirstAnswer(BaseHTTPRequestHandler):
    """Answers every request with ``{}``, the first one of each method only after 1 s."""

    seen: ClassVar[list[str]] = []
    stalled: ClassVar[threading.Event] = threading.Event()

    def _answer(self) -> None:
        self.seen.append(self.command)
        if self.seen.count(self.command) == 1:
            self.stalled.wait(1.0)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[AirflowStack]:
    SlowFirstAnswer.seen = []
    SlowFirstAnswer.stalled = threading.Event()
    server = ThreadingHTTPServer(("127.0.0.1", 0), SlowFirstAnswer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    stack = AirflowStack(AirflowEnv(tmp_path, tmp_path))
    stack.url = f"http://127.0.0.1:{server.server_address[1]}"
    stack.read_timeout = 0.2
    try:
        yield stack
    finally:
        SlowFirstAnswer.stalled.set()  # release a stalled answer so the server stops at once
        server.shutdown()
        server.server_close()


def test_a_get_that_times_out_is_asked_again(stack: AirflowStack) -> None:
    assert stack.api("GET", "/api/v2/dags/x/dagRuns/y") == {}
    assert SlowFirstAnswer.seen == ["GET", "GET"]


def test_a_post_that_times_out_is_not_repeated(stack: AirflowStack) -> None:
    with pytest.raises(requests.Timeout):
        stack.api("POST", "/api/v2/dags/x/dagRuns", json={})
    assert SlowFirstAnswer.seen == ["POST"]
