"""DAG runs in this process: ``dag.test()`` (what `airflow dags test` calls) for a DAG of tests/dags.

The same task runner code as the `airflow dags test` subprocess, without its 7 s start-up: the DAG is
parsed from tests/dags (the dags folder tests/conftest.py sets), run against this process's own
Airflow home (a migrated SQLite file made on first use), and what it left is read back as the
subprocess runs report it (`devtools.airflow_local.DagRunResult`): states, tries, XComs and the output.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from airflow.cli import cli_parser

try:
    from airflow.dag_processing.dagbag import DagBag
except ImportError:  # Airflow < 3.2 has it in airflow.models
    from airflow.models.dagbag import DagBag  # type: ignore[no-redef,unused-ignore]
from airflow.models.connection import Connection
from airflow.models.xcom import XComModel
from airflow.utils import db
from airflow.utils.session import create_session

from airflow_provider_kibo_cancel.emulator import KiboEmulator
from devtools.airflow_local import AirflowEnv, DagRunResult

DAGS = Path(__file__).parent / "dags"
#: What a module fixture of DAG-run tests yields: the run, and the emulator it ran against.
Run = tuple[DagRunResult, KiboEmulator]
_migrated: list[bool] = []
_subprocess_homes: dict[Path, AirflowEnv] = {}


def _migrate() -> None:
    """This process's Airflow database, created once (the home is tests/conftest.py's temporary one)."""
    if not _migrated:
        db.initdb()
        _migrated.append(True)


@contextlib.contextmanager
def _connections(connections: dict[str, dict[str, Any]]) -> Iterator[None]:
    names = {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(conn) for conn_id, conn in connections.items()}
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(names)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _captured() -> Iterator[io.StringIO]:
    """Everything the run prints or logs, as the subprocess's stdout and stderr would have held it."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            yield out
    finally:
        root.removeHandler(handler)


def airflow_cli(*args: str) -> None:
    """An `airflow` CLI command run in this process (Airflow's own parser and command), e.g.
    ``airflow_cli("connections", "add", ...)`` against this process's database."""
    _migrate()
    parsed = cli_parser.get_parser().parse_args(list(args))
    with _captured():
        parsed.func(parsed)


def run_in_process(
    dag_id: str,
    *,
    conf: dict[str, Any] | None = None,
    connections: dict[str, dict[str, Any]] | None = None,
    dag_file: Path | None = None,
) -> DagRunResult:
    """`dag.test()` one run of ``dag_id`` (from ``dag_file``, default: the file of tests/dags defining it)."""
    _migrate()
    if dag_file is None:  # the file that defines it (parsing one file, not the whole folder)
        dag_file = next(p for p in sorted(DAGS.glob("*.py")) if f"def {dag_id}(" in p.read_text())
    bag = DagBag(str(dag_file))
    assert not bag.import_errors, bag.import_errors
    dag = bag.dags[dag_id]
    if not hasattr(dag, "test"):
        # Airflow 3.0: the task SDK's DAG has no test(), and the scheduler's DAG that `airflow dags test`
        # builds from it runs tasks in process with logging and timeouts of its own; its tests run the
        # DAG as users do there, in an `airflow dags test` subprocess (a home of their own).
        return _subprocess_run(dag_id, dag_file.parent, conf, connections)
    with _connections(connections or {}), _captured() as out:
        dag_run = dag.test(run_conf=conf)
    result = DagRunResult(0 if dag_run.state == "success" else 1, out.getvalue())
    with create_session() as session:
        for ti in dag_run.get_task_instances(session=session):
            key = (ti.task_id, ti.map_index)
            result.states[key] = str(ti.state)
            result.tries[key] = ti.try_number
            if ti.end_date:
                result.ended_at[key] = ti.end_date.timestamp()
        rows = session.query(XComModel).filter_by(dag_id=dag_id, run_id=dag_run.run_id)
        for row in rows:
            value = XComModel.deserialize_value(row)
            result.xcoms[(row.task_id, row.map_index, row.key)] = value
            if row.key == "return_value":
                result.xcom[(row.task_id, row.map_index)] = value
    return result


def _subprocess_run(
    dag_id: str, dags: Path, conf: dict[str, Any] | None, connections: dict[str, dict[str, Any]] | None
) -> DagRunResult:
    """`airflow dags test` in a subprocess, with a home per DAG folder made once per test process; the
    connections this process's database holds (made with ``airflow_cli``) go with it."""
    env = _subprocess_homes.get(dags)
    if env is None:
        home = Path(os.environ["AIRFLOW_HOME"]) / f"dags-test-{len(_subprocess_homes)}"
        env = _subprocess_homes[dags] = AirflowEnv(home, dags)
        env.migrate()
    with create_session() as session:
        stored = {c.conn_id: json.loads(c.as_json()) for c in session.query(Connection)}
    return env.run_dag(dag_id, conf=conf, connections={**stored, **(connections or {})})
