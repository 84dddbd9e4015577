"""Run DAG files inside a real Airflow 3 (`airflow dags test`, SQLite) and read back what they left."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

AIRFLOW = str(Path(sys.executable).with_name("airflow"))


@dataclass
class DagRunResult:
    returncode: int
    output: str
    states: dict[tuple[str, int], str] = field(default_factory=dict)
    tries: dict[tuple[str, int], int] = field(default_factory=dict)
    xcom: dict[tuple[str, int], Any] = field(default_factory=dict)

    def state(self, task_id: str, map_index: int = -1) -> str:
        return self.states[(task_id, map_index)]


class AirflowEnv:
    """An AIRFLOW_HOME with a migrated SQLite database and a dags folder."""

    def __init__(self, home: Path, dags_folder: Path) -> None:
        self.home = home
        self.dags_folder = dags_folder
        self.env = {
            **os.environ,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        }
        self.env.pop("AIRFLOW_CONN_KIBO_DEFAULT", None)

    def migrate(self) -> None:
        self.airflow("db", "migrate")

    def airflow(
        self, *args: str, env: dict[str, str] | None = None, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [AIRFLOW, *args],
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
        result = DagRunResult(proc.returncode, proc.stdout + proc.stderr)
        with sqlite3.connect(self.home / "airflow.db") as db:
            run_id = db.execute(
                "SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (dag_id,)
            ).fetchone()[0]
            for task_id, map_index, state, try_number in db.execute(
                "SELECT task_id, map_index, state, try_number FROM task_instance "
                "WHERE dag_id = ? AND run_id = ?",
                (dag_id, run_id),
            ):
                result.states[(task_id, map_index)] = state
                result.tries[(task_id, map_index)] = try_number
            for task_id, map_index, value in db.execute(
                "SELECT task_id, map_index, value FROM xcom "
                "WHERE dag_id = ? AND run_id = ? AND key = 'return_value'",
                (dag_id, run_id),
            ):
                result.xcom[(task_id, map_index)] = json.loads(value)
        return result
