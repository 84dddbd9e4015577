"""Asset events and metrics: one `airflow dags test` of tests/dags/kibo_signals.py with StatsD on.

The run's asset events are read from the metadata database and its metrics from a UDP socket the test
opens on 127.0.0.1 as Airflow's StatsD host. Runs on every supported Airflow (3.0 included).
"""

from __future__ import annotations

import contextlib
import json
import socket
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_kibo_cancel import assets, metrics
from airflow_provider_kibo_cancel.emulator import KiboEmulator
from devtools.airflow_local import AirflowEnv, DagRunResult
from tests.support import APP_KEY, SHARED_SECRET, TENANT, kibo_connection

DAGS = Path(__file__).parents[1] / "dags"
CANCELED_URI = "kibo://30294/orders/canceled"


@dataclass
class StatsdListener:
    """A UDP socket on 127.0.0.1 collecting StatsD lines (``name:value|type``) until closed."""

    sock: socket.socket
    lines: list[str] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def collect(self) -> None:
        while True:
            try:
                data = self.sock.recv(65535)
            except OSError:
                return  # closed
            self.lines.extend(data.decode(errors="replace").splitlines())

    def metrics(self, prefix: str) -> dict[str, list[tuple[float, str]]]:
        found: dict[str, list[tuple[float, str]]] = {}
        for line in self.lines:
            name, _, rest = line.partition(":")
            if name.startswith(prefix):
                value, _, kind = rest.partition("|")
                found.setdefault(name, []).append((float(value), kind.split("|")[0]))
        return found


@dataclass
class SignalsRun:
    result: DagRunResult
    emulator: KiboEmulator
    events: list[dict[str, Any]]
    statsd: StatsdListener


def asset_events(home: Path, dag_id: str) -> list[dict[str, Any]]:
    """The asset events a DAG's latest run recorded, with their asset's URI, from the SQLite database."""
    with contextlib.closing(sqlite3.connect(home / "airflow.db")) as db:
        (run_id,) = db.execute(
            "SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (dag_id,)
        ).fetchone()
        rows = db.execute(
            "SELECT a.uri, e.source_task_id, e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id "
            "WHERE e.source_dag_id = ? AND e.source_run_id = ? ORDER BY e.id",
            (dag_id, run_id),
        ).fetchall()
    return [{"uri": uri, "task": task, "extra": json.loads(extra)} for uri, task, extra in rows]


@pytest.fixture(scope="module")
def signals_run(airflow_env: AirflowEnv) -> Iterator[SignalsRun]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    listener = StatsdListener(sock)
    thread = threading.Thread(target=listener.collect, daemon=True)
    thread.start()
    env = AirflowEnv(airflow_env.home, DAGS)
    env.env.update(
        {
            "AIRFLOW__METRICS__STATSD_ON": "True",
            "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
            "AIRFLOW__METRICS__STATSD_PORT": str(listener.port),
            "AIRFLOW__METRICS__STATSD_PREFIX": "airflow",
        }
    )
    try:
        with KiboEmulator(tenants=(TENANT,), clients={APP_KEY: SHARED_SECRET}) as emu:
            emu.add_orders(range(1000, 1100))
            emu.add_orders(range(2000, 2010), status="CANCELED")
            emu.inject("status", status=429, retry_after="0", order_id=1001)
            emu.inject("status", status=503, order_id=1002)
            emu.inject("drop", order_id=1003)
            result = env.run_dag("kibo_signals", connections={"kibo_default": kibo_connection(emu)})
            time.sleep(0.5)  # the last UDP datagrams
            yield SignalsRun(result, emu, asset_events(env.home, "kibo_signals"), listener)
    finally:
        sock.close()
        thread.join(timeout=5)


def events_of(run: SignalsRun, task_id: str) -> list[dict[str, Any]]:
    return [e for e in run.events if e["task"] == task_id]


def test_task_states(signals_run: SignalsRun) -> None:
    result = signals_run.result
    expected = {
        "single": "success",
        "single_already": "success",
        "single_alias": "success",
        "single_dry_run": "success",
        "single_no_outlets": "success",
        "single_invalid": "failed",
        "single_unknown": "failed",
        "single_other_tenant": "failed",
        "bulk": "success",
        "bulk_other_tenant": "failed",
        "bulk_alias": "success",
        "bulk_nothing_new": "success",
        "single_already_alias": "success",
        "send_deferral_and_not_attempted_metrics": "success",
    }
    assert {task: result.state(task) for task in expected} == expected, result.output[-5000:]


def test_a_single_cancel_attaches_tenant_and_order_to_its_asset_event(signals_run: SignalsRun) -> None:
    assert events_of(signals_run, "single") == [
        {
            "uri": CANCELED_URI,
            "task": "single",
            "extra": {
                "tenant_id": TENANT,
                "canceled": [1001],
                "already_canceled": [],
                "counts": {"total": 1, "canceled": 1, "already_canceled": 0},
                "truncated": False,
                "dry_run": False,
            },
        }
    ]
    (already,) = events_of(signals_run, "single_already")
    assert already["uri"] == "kibo_signals_own_asset"  # any Asset outlet gets the extra
    assert (already["extra"]["canceled"], already["extra"]["already_canceled"]) == ([], [2001])


def test_an_asset_alias_gets_the_tenants_asset(signals_run: SignalsRun) -> None:
    (event,) = events_of(signals_run, "single_alias")
    assert event["uri"] == CANCELED_URI
    expected = assets.extra_for_order(TENANT, 1002, already_canceled=False, dry_run=False)
    assert expected["canceled"] == [1002]
    assert event["extra"] == assets.alias_extra(expected)
    if assets._airflow_version() < (3, 2):  # Airflow hashes alias extras there: lists travel as JSON text
        assert event["extra"]["canceled"] == "[1002]"
    else:
        assert event["extra"] == expected


def test_a_dry_run_event_says_so_and_lists_nothing(signals_run: SignalsRun) -> None:
    # Airflow records an event for a declared Asset on every success; an alias gets none from a dry run.
    (event,) = events_of(signals_run, "single_dry_run")
    assert event["uri"] == "kibo_signals_own_asset"
    assert event["extra"]["dry_run"] is True
    assert (event["extra"]["canceled"], event["extra"]["already_canceled"]) == ([], [])
    assert signals_run.emulator.order(1050)["orderStatus"] == "OPEN"  # type: ignore[index]


def test_a_bulk_event_has_the_counts_and_the_ids(signals_run: SignalsRun) -> None:
    (event,) = events_of(signals_run, "bulk")
    extra = event["extra"]
    assert event["uri"] == CANCELED_URI
    assert sorted(extra.pop("canceled")) == [1010, 1011, 1012]
    assert extra == {
        "tenant_id": TENANT,
        "already_canceled": [2002],
        "counts": {
            "total": 7,
            "canceled": 3,
            "already_canceled": 1,
            "failed": 1,
            "not_attempted": 0,
            "invalid": 1,
            "duplicates": 1,
        },
        "truncated": False,
        "dry_run": False,
    }


def test_a_bulk_alias_gets_the_tenants_asset_when_orders_were_canceled(signals_run: SignalsRun) -> None:
    (event,) = events_of(signals_run, "bulk_alias")
    assert event["uri"] == CANCELED_URI
    canceled = event["extra"]["canceled"]
    assert sorted(json.loads(canceled) if isinstance(canceled, str) else canceled) == [1020, 1021]


def test_a_run_that_canceled_nothing_new_gives_an_alias_no_event(signals_run: SignalsRun) -> None:
    # Everything was canceled already: no event through the alias, so no consumer DAG starts for nothing.
    # Airflow itself records one for a declared Asset on every success (it cannot be withdrawn); its
    # extra says counts.canceled 0, and the task log says why the event is there.
    assert events_of(signals_run, "single_already_alias") == []
    (event,) = events_of(signals_run, "bulk_nothing_new")
    assert event["uri"] == "kibo_signals_nothing_new"
    assert event["extra"]["counts"]["canceled"] == 0
    assert event["extra"]["canceled"] == [] and sorted(event["extra"]["already_canceled"]) == [2003, 2004]
    assert (
        "This run canceled no order, but Airflow records an event for the declared Asset outlet(s) "
        "'kibo_signals_nothing_new'" in signals_run.result.output
    )


def test_failed_tasks_record_no_event_and_another_tenants_outlet_sends_nothing(
    signals_run: SignalsRun,
) -> None:
    for task in ("single_invalid", "single_unknown", "single_other_tenant", "bulk_other_tenant"):
        assert events_of(signals_run, task) == []
    sent = {r.body["orderId"] for r in signals_run.emulator.requests_to("cancel")}
    assert not sent & {1060, 1070, 1071}
    assert signals_run.result.tries[("single_other_tenant", -1)] == 1
    output = signals_run.result.output
    assert (
        "outlet 'kibo://99999/orders/canceled' names tenant 99999 but the connection is for tenant" in output
    )
    assert SHARED_SECRET not in json.dumps(signals_run.events)


def test_statsd_receives_every_metric_with_the_expected_counts(signals_run: SignalsRun) -> None:
    found = signals_run.statsd.metrics("airflow.kibo.")
    counters = Counter({name: sum(v for v, _ in values) for name, values in found.items()})
    assert {name: counters[name] for name in counters if all(k == "c" for _, k in found[name])} == {
        # single, single_alias, single_no_outlets, 3 in bulk, 2 in bulk_alias
        "airflow.kibo.cancel.canceled": 8,
        "airflow.kibo.cancel.already_canceled": 5,
        "airflow.kibo.cancel.failed": 2,  # two unknown orders; another tenant's outlet is no outcome
        "airflow.kibo.cancel.invalid": 2,
        "airflow.kibo.cancel.not_attempted": 2,
        "airflow.kibo.deferral": 1,
        "airflow.kibo.http.retry.429": 1,
        "airflow.kibo.http.retry.5xx": 1,
        "airflow.kibo.http.retry.transport": 1,
        "airflow.kibo.oauth.token_fetch": 9,  # each task that sent anything fetched one token
    }, signals_run.statsd.lines[-50:]
    timers = {name: len(values) for name, values in found.items() if values[0][1] == "ms"}
    # Every answered request is timed; the dropped one has no answer to time.
    assert timers == {
        "airflow.kibo.http.duration.oauth": 9,
        "airflow.kibo.http.duration.cancel": 17,
        "airflow.kibo.http.duration.get_order": 5,
    }
    assert all(v >= 0 for name in timers for v, _ in found[name])
    assert set(found) <= {f"airflow.{name}" for name in metrics.METRICS}
    assert not [line for line in signals_run.statsd.lines if SHARED_SECRET in line]
