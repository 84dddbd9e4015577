"""Run DAG files inside a real Airflow 3 (`airflow dags test`, SQLite) and read back what they left.

Used by the tests, `make demo` and the benchmarks; not part of the installed package.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

import requests

AIRFLOW = str(Path(sys.executable).with_name("airflow"))
# Airflow 3.0 stores an XCom value as a JSON string of its JSON; later releases store the JSON itself.
XCOM_STORED_TWICE_ENCODED = version("apache-airflow-core").startswith("3.0.")


@dataclass
class DagRunResult:
    returncode: int
    output: str
    states: dict[tuple[str, int], str] = field(default_factory=dict)
    tries: dict[tuple[str, int], int] = field(default_factory=dict)
    xcom: dict[tuple[str, int], Any] = field(default_factory=dict)
    #: Every XCom key: (task_id, map_index, key) -> value.
    xcoms: dict[tuple[str, int, str], Any] = field(default_factory=dict)
    #: When each task instance ended (epoch seconds), for "nothing happened after the task" checks.
    ended_at: dict[tuple[str, int], float] = field(default_factory=dict)

    def state(self, task_id: str, map_index: int = -1) -> str:
        return self.states[(task_id, map_index)]


class AirflowEnv:
    """An AIRFLOW_HOME with a migrated SQLite database and a dags folder."""

    def __init__(self, home: Path, dags_folder: Path, *, airflow: str = AIRFLOW) -> None:
        self.home = home
        self.dags_folder = dags_folder
        self.airflow_bin = airflow
        self.env = {
            **os.environ,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            # Two cores shared by two stacks can stall every process for a minute or more (one CI run:
            # no progress from 23:18:40 to 23:20:45). Airflow's defaults then fail what would finish:
            # the scheduler exits on SQLite's "database is locked" after the driver's 5 s wait, and a
            # task process gives up parsing its DAG file after 30 s ("Dag not found during start up").
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}?timeout=120",
            "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "180",
            "AIRFLOW__DAG_PROCESSOR__DAG_FILE_PROCESSOR_TIMEOUT": "240",
        }
        self.env.pop("AIRFLOW_CONN_KIBO_DEFAULT", None)

    def migrate(self) -> None:
        self.airflow("db", "migrate")

    def airflow(
        self, *args: str, env: dict[str, str] | None = None, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.airflow_bin, *args],
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"airflow {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    def run_dag(
        self,
        dag_id: str,
        *,
        conf: dict[str, Any] | None = None,
        connections: dict[str, dict[str, Any]] | None = None,
    ) -> DagRunResult:
        """`airflow dags test` one run, then read task states, tries and XComs from the database."""
        env = {
            f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(conn)
            for conn_id, conn in (connections or {}).items()
        }
        args = ["dags", "test", dag_id]
        if conf is not None:
            args += ["-c", json.dumps(conf)]
        proc = self.airflow(*args, env=env, check=False)
        if "could not be found in DagBag read from database" in proc.stdout + proc.stderr:
            # Airflow 3.0's `dags test` reads the DAG from the database: serialize the folder, try again.
            self.airflow("dags", "reserialize")
            proc = self.airflow(*args, env=env, check=False)
        result = DagRunResult(proc.returncode, proc.stdout + proc.stderr)
        with contextlib.closing(sqlite3.connect(self.home / "airflow.db")) as db:
            row = db.execute(
                "SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (dag_id,)
            ).fetchone()
            if row is None:
                raise AssertionError(f"airflow dags test {dag_id} created no run:\n{result.output[-5000:]}")
            (run_id,) = row
            for task_id, map_index, state, try_number, end_date in db.execute(
                "SELECT task_id, map_index, state, try_number, end_date FROM task_instance "
                "WHERE dag_id = ? AND run_id = ?",
                (dag_id, run_id),
            ):
                result.states[(task_id, map_index)] = state
                result.tries[(task_id, map_index)] = try_number
                if end_date:
                    ended = datetime.fromisoformat(end_date)
                    result.ended_at[(task_id, map_index)] = ended.replace(
                        tzinfo=ended.tzinfo or timezone.utc
                    ).timestamp()
            for task_id, map_index, key, value in db.execute(
                "SELECT task_id, map_index, key, value FROM xcom WHERE dag_id = ? AND run_id = ?",
                (dag_id, run_id),
            ):
                # SQLite hands a JSON number stored in the column back as a number, not as text.
                decoded = json.loads(value) if isinstance(value, str | bytes) else value
                if XCOM_STORED_TWICE_ENCODED and isinstance(decoded, str):
                    decoded = json.loads(decoded)
                result.xcoms[(task_id, map_index, key)] = decoded
                if key == "return_value":
                    result.xcom[(task_id, map_index)] = decoded
        return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class AirflowStack:
    """API server, scheduler (LocalExecutor) and DAG processor, as production runs them, on 127.0.0.1.

    Each process gets its own session (process group) and is stopped with it, even when a test fails.
    """

    #: Seconds to wait for one answer of the REST API (``api()``).
    read_timeout: float = 30

    def __init__(
        self,
        env: AirflowEnv,
        *,
        extra_env: dict[str, str] | None = None,
        components: tuple[str, ...] = ("api-server", "scheduler", "dag-processor"),
    ) -> None:
        self.airflow_env = env
        self.components = components
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **env.env,
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": "kibo-provider-tests-only",
            "AIRFLOW__API__SECRET_KEY": "kibo-provider-tests-only",
            # Airflow 3.0 leaves the issuer unset, which newer PyJWT releases refuse.
            "AIRFLOW__API_AUTH__JWT_ISSUER": "airflow",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            **(extra_env or {}),
        }
        self.processes: list[subprocess.Popen[bytes]] = []
        #: The component each of ``processes`` runs, in the same order.
        self.process_names: list[str] = []
        self.session = requests.Session()

    def __enter__(self) -> AirflowStack:
        try:
            commands = {
                "api-server": ["api-server", "--host", "127.0.0.1", "--port", str(self.port)],
                # Their log servers bind every interface; the API server reads the logs from this disk.
                "scheduler": ["scheduler", "--skip-serve-logs"],
                "dag-processor": ["dag-processor"],
                "triggerer": ["triggerer", "--skip-serve-logs"],
            }
            for name in self.components:
                args = commands[name]
                # The process writes to its own copy of the descriptor: this one is closed at once.
                with (self.airflow_env.home / f"{name}.log").open("wb") as log:
                    self.process_names.append(name)
                    self.processes.append(
                        subprocess.Popen(
                            [self.airflow_env.airflow_bin, *args],
                            env=self.env,
                            stdout=log,
                            stderr=subprocess.STDOUT,
                            start_new_session=True,
                        )
                    )
            self._wait_healthy()
            token = self.session.get(f"{self.url}/auth/token", timeout=10).json()["access_token"]
            self.session.headers["Authorization"] = f"Bearer {token}"
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _wait_healthy(self, timeout: float = 180) -> None:
        # Several processes starting on two cores: the API server may accept and then answer slowly.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.fail_if_a_process_ended()
            try:
                if self.session.get(f"{self.url}/api/v2/monitor/health", timeout=10).ok:
                    return
            except requests.RequestException:  # not listening yet, or too busy starting to answer
                pass
            time.sleep(0.5)
        raise TimeoutError(f"API server not healthy after {timeout} s; see {self.airflow_env.home}")

    def stop(self) -> None:
        for proc in self.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.processes:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        self.processes.clear()
        self.process_names.clear()

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        # The API server also serves the execution API of every running task: with 8 task processes on
        # two cores one answer can take longer than the read timeout. A GET changes nothing, so a
        # timed-out one is asked again (three tries in all); a POST or PATCH is never repeated.
        tries = 3 if method == "GET" else 1
        for attempt in range(1, tries + 1):
            try:
                response = self.session.request(
                    method, f"{self.url}{path}", timeout=self.read_timeout, **kwargs
                )
                break
            except requests.Timeout:
                if attempt == tries:
                    raise
        if not response.ok:
            raise AssertionError(f"{method} {path} -> {response.status_code}: {response.text[:2000]}")
        return response.json() if response.content else None

    def add_connection(self, conn_id: str, connection: dict[str, Any]) -> None:
        """Create a connection over the REST API, as the UI does; ``connection`` is in the JSON form of
        an ``AIRFLOW_CONN_*`` variable (``extra`` a dict)."""
        body = {"connection_id": conn_id, **connection}
        if isinstance(body.get("extra"), dict):
            body["extra"] = json.dumps(body["extra"])
        self.api("POST", "/api/v2/connections", json=body)

    def wait_for_dag(self, dag_id: str, timeout: float = 240) -> None:
        # Longer than AirflowEnv's DAG file import timeout, so a slow parse is waited out.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.fail_if_a_process_ended()
            try:
                if self.session.get(f"{self.url}/api/v2/dags/{dag_id}", timeout=10).ok:
                    return
            except requests.Timeout:  # busy, as in api(): ask again until the deadline
                pass
            time.sleep(1)
        raise TimeoutError(f"DAG {dag_id} not parsed after {timeout} s")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Every task instance of a run (paged: the API answers at most 100 at a time)."""
        base = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances"
        found: list[dict[str, Any]] = []
        while True:
            page = self.api("GET", base, params={"limit": 100, "offset": len(found)})
            found += page["task_instances"]
            if len(found) >= page["total_entries"] or not page["task_instances"]:
                return found

    def wait_for_runs(self, dag_id: str, timeout: float = 180) -> list[dict[str, Any]]:
        """The DAG's runs, once it has any."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.fail_if_a_process_ended()
            runs: list[dict[str, Any]] = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns")["dag_runs"]
            if runs:
                return runs
            time.sleep(1)
        raise TimeoutError(f"no run of {dag_id} after {timeout} s")

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 180) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.fail_if_a_process_ended()
            state = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"]
            if state in ("success", "failed"):
                return str(state)
            time.sleep(1)
        raise TimeoutError(
            f"run {run_id} of {dag_id} not finished after {timeout} s\n{self.diagnosis(dag_id, run_id)}"
        )

    def fail_if_a_process_ended(self) -> None:
        """Raise, with its log, if a component of the stack has exited: a wait would be for nothing."""
        for name, proc in zip(self.process_names, self.processes, strict=True):
            if proc.poll() is not None:
                raise RuntimeError(f"the stack's {name} exited with {proc.returncode}:\n{self.logs(name)}")

    def logs(self, name: str, tail: int = 4000) -> str:
        """The last ``tail`` characters of a component's log (``scheduler``, ``worker1``, ...)."""
        log = self.airflow_env.home / f"{name}.log"
        if not log.exists():
            return f"({log} does not exist)"
        return log.read_text(errors="replace")[-tail:]

    def diagnosis(self, dag_id: str, run_id: str) -> str:
        """What a stuck run left: its task instances' states and the tail of the scheduler's log (CI keeps
        nothing else of a failed run)."""
        try:
            states: dict[str, int] = {}
            for ti in self.task_instances(dag_id, run_id):
                states[str(ti["state"])] = states.get(str(ti["state"]), 0) + 1
            summary = f"{sum(states.values())} task instances by state: {states}"
        except (requests.RequestException, AssertionError, KeyError) as exc:
            summary = f"task instances unknown ({exc!r})"
        return f"{summary}\nscheduler.log, last lines:\n{self.logs('scheduler')}"
