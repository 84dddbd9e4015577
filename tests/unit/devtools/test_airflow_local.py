"""The test harness (`devtools.airflow_local.AirflowStack`): a busy API server, a component that died."""

from __future__ import annotations

import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
import requests
from sqlalchemy import create_engine

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


def test_a_component_that_died_fails_the_wait_at_once_with_its_log(tmp_path: Path) -> None:
    stack = AirflowStack(AirflowEnv(tmp_path, tmp_path))
    with (tmp_path / "scheduler.log").open("wb") as log:
        proc = subprocess.Popen(["sh", "-c", "echo database is locked; exit 3"], stdout=log)
    proc.wait(timeout=10)
    stack.process_names.append("scheduler")
    stack.processes.append(proc)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"(?s)scheduler exited with 3:\n.*database is locked"):
        stack.wait_for_run("d", "r", timeout=60)
    assert time.monotonic() - started < 30  # not the whole timeout


def test_the_metadata_database_waits_out_a_write_lock_longer_than_sqlites_default(tmp_path: Path) -> None:
    # A scheduler exits on SQLite's "database is locked", which the driver raises after 5 s by default:
    # less than a stall of a starved CI machine. Here a lock held 6 s is waited out.
    engine = create_engine(AirflowEnv(tmp_path, tmp_path).env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    assert engine.url.database == str(tmp_path / "airflow.db")  # the file run_dag() reads
    holder = sqlite3.connect(tmp_path / "airflow.db", isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    release = threading.Timer(6.0, holder.execute, args=("COMMIT",))
    started = time.monotonic()
    release.start()
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE written_after_the_lock (x INTEGER)")
    finally:
        release.join()
        holder.close()
        engine.dispose()
    assert time.monotonic() - started >= 5.9  # it did wait for the lock, past the default 5 s
