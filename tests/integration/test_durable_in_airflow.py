"""Issue 23's proof on the production path (API server, scheduler, LocalExecutor; each try a supervised
task process that reaches the task state store through the execution API):

- a bulk try SIGKILLed mid-run is retried by Airflow: every order canceled once at Kibo, at most the
  orders in flight and those settled in the last second before the kill sent again, the first try's
  cancels `canceled` in the final summary, and the DAG run's asset events naming every canceled order;
- a retry after one always-failing order sends only that order;
- a non-deferrable run stopped by a 20 s 429 wall with a half-hour retry_delay is retried when the wall
  ends (the Kibo retry policy), and the retry sends only what was left.

Airflow 3.3+ only (the task state store and retry policies).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_kibo_cancel.emulator import KiboEmulator
from devtools.airflow_local import AirflowEnv, AirflowStack
from tests.integration.test_scheduler import _process_holding
from tests.support import APP_KEY, SHARED_SECRET, TENANT, kibo_connection, one_heavy_stack_at_a_time

pytestmark = pytest.mark.newest_only  # durable runs need Airflow 3.3's task state store

DAG_ID = "kibo_durable"
CRASH = range(5000, 5300)
ONE_FAILING = range(6000, 6100)
WALL = range(7000, 7100)


class Proof:
    def __init__(self) -> None:
        self.emu: KiboEmulator
        self.killed_at = 0.0
        self.wall_started = 0.0
        self.tis: dict[str, dict[str, Any]] = {}
        self.tries: dict[str, list[dict[str, Any]]] = {}
        self.summaries: dict[tuple[str, str], Any] = {}
        self.events: list[dict[str, Any]] = []
        self.log = ""

    def cancels(self, orders: range) -> list[Any]:
        # A body may be missing: a try SIGKILLed between sending a request's headers and its body.
        return [
            r
            for r in self.emu.requests_to("cancel")
            if isinstance(r.body, dict) and r.body.get("orderId") in orders
        ]


def _value(entry: dict[str, Any]) -> Any:
    return entry["value"] if not isinstance(entry["value"], str) else json.loads(entry["value"])


@pytest.fixture(scope="module")
def proof(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proof]:
    tmp = tmp_path_factory.mktemp("durable")
    dags = tmp / "dags"
    dags.mkdir()
    shutil.copy(Path(__file__).parents[1] / "dags_durable" / "kibo_durable.py", dags)
    env = AirflowEnv(tmp / "airflow_home", dags)
    env.env.pop("AIRFLOW_CONN_KIBO_DEFAULT", None)
    env.home.mkdir()
    env.migrate()
    result = Proof()
    with (
        one_heavy_stack_at_a_time(tmp_path_factory),
        KiboEmulator(tenants=(TENANT,), clients={APP_KEY: SHARED_SECRET}, latency=0.05) as emu,
    ):
        result.emu = emu
        emu.add_orders(list(CRASH) + list(ONE_FAILING) + list(WALL))
        emu.inject("status", status=503, order_id=6050, times=None)
        stop = threading.Event()
        with AirflowStack(env) as stack:
            stack.add_connection("kibo_default", kibo_connection(emu))
            stack.add_connection("kibo_two_attempts", kibo_connection(emu, max_attempts=2))
            stack.add_connection("kibo_short_sleep", kibo_connection(emu, max_retry_wait=1))
            stack.wait_for_dag(DAG_ID)
            stack.api("PATCH", f"/api/v2/dags/{DAG_ID}", json={"is_paused": False})
            run_id = stack.api("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", json={"logical_date": None})[
                "dag_run_id"
            ]
            watcher = threading.Thread(target=_watch, args=(result, stop), daemon=True)
            watcher.start()
            try:
                state = stack.wait_for_run(DAG_ID, run_id, timeout=300)
            except TimeoutError:  # each test says what it misses (a retry half an hour away, say)
                state = "not finished after 300 s"
            finally:
                stop.set()
            base = f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances"
            result.tis = {ti["task_id"]: ti for ti in stack.api("GET", base)["task_instances"]}
            for task_id in result.tis:
                result.tries[task_id] = stack.api("GET", f"{base}/{task_id}/tries")["task_instances"]
                for key in ("return_value", "summary"):
                    with contextlib.suppress(AssertionError):  # a key the task did not push
                        result.summaries[(task_id, key)] = _value(
                            stack.api("GET", f"{base}/{task_id}/xcomEntries/{key}")
                        )
            result.events = stack.api(
                "GET", "/api/v2/assets/events", params={"source_dag_id": DAG_ID, "source_run_id": run_id}
            )["asset_events"]
        result.log = state + "\n" + (env.home / "scheduler.log").read_text()[-3000:]
        yield result


def _watch(proof: Proof, stop: threading.Event) -> None:
    """SIGKILL the crash task's process after its 80th applied cancel; raise the wall at the 30th."""
    emu = proof.emu
    while not stop.is_set():  # an error here would leave both faults unraised: it fails the tests loudly
        if not proof.killed_at and sum(emu.cancels_applied(i) for i in CRASH) >= 80:
            last = proof.cancels(CRASH)[-1]
            os.kill(_process_holding(last.client_port).pid, signal.SIGKILL)
            proof.killed_at = time.time()
        if not proof.wall_started and len(proof.cancels(WALL)) >= 30:
            emu.inject("status", status=429, retry_after="20", times=None, seconds=20)
            proof.wall_started = time.time()
        time.sleep(0.005)


def test_a_killed_try_is_resumed_by_the_retry(proof: Proof) -> None:
    assert proof.killed_at, "the crash task was never killed"
    assert proof.tis["crash"]["state"] == "success", proof.log
    assert proof.tis["crash"]["try_number"] == 2
    emu = proof.emu
    assert all(emu.cancels_applied(i) == 1 for i in CRASH)
    requests = proof.cancels(CRASH)
    # The tries told apart by the retry's token request (a new process): a cancel the killed try had in
    # flight can reach the emulator just after the kill, and is still the killed try's.
    retry_started = min(r.received_at for r in emu.requests_to("oauth") if r.received_at > proof.killed_at)
    before = [r for r in requests if r.received_at < retry_started]
    after = [r for r in requests if r.received_at >= retry_started]
    sent_before = {r.body["orderId"] for r in before}
    resent = {r.body["orderId"] for r in after} & sent_before
    # In flight at the kill, or settled in its last second (the ledger is written at least every second).
    last_second = {r.body["orderId"] for r in before if r.received_at > proof.killed_at - 1.0 - 0.05}
    print(
        f"\ncrash: {len(before)} cancels before the kill, {len(after)} after; re-sent {len(resent)} "
        f"(bound: {len(last_second)} sent in the last second); {len(emu.requests_to('get_order'))} Get Orders"
    )
    assert resent <= last_second, sorted(resent - last_second)
    assert len(after) == len(CRASH) - len(sent_before) + len(resent)
    summary = proof.summaries[("crash", "return_value")]
    assert summary["canceled"] == list(CRASH)  # the first try's cancels stay canceled
    assert summary["already_canceled"] == [] and summary["failed"] == [] and summary["not_attempted"] == []
    named = set()
    for event in proof.events:
        if event["source_task_id"] == "crash":
            named |= set(event["extra"]["canceled"])
    assert named == set(CRASH)


def test_a_retry_after_one_failing_order_sends_only_that_order(proof: Proof) -> None:
    assert proof.tis["one_failing"]["state"] == "failed"
    assert proof.tis["one_failing"]["try_number"] == 2
    sent = [r.body["orderId"] for r in proof.cancels(ONE_FAILING)]
    assert sent.count(6050) == 4  # two attempts in each of two tries
    assert all(sent.count(i) == 1 for i in ONE_FAILING if i != 6050)
    assert all(proof.emu.cancels_applied(i) == 1 for i in ONE_FAILING if i != 6050)
    summary = proof.summaries[("one_failing", "summary")]
    assert len(summary["canceled"]) == 99 and [f["order_id"] for f in summary["failed"]] == [6050]


def test_a_429_wall_is_retried_when_kibo_accepts_calls_again(proof: Proof) -> None:
    assert proof.wall_started, "the wall was never raised"
    ti = proof.tis["wall"]
    assert ti["state"] == "success", proof.log
    assert ti["try_number"] == 2
    requests = proof.cancels(WALL)
    wall_end = proof.wall_started + 20
    refused = [r for r in requests if proof.wall_started <= r.received_at <= wall_end]
    after = [r for r in requests if r.received_at > wall_end]
    ended = time.mktime(time.strptime(ti["end_date"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
    print(
        f"\nwall: {len(refused)} cancels into the wall, {len(after)} after it; the task ended "
        f"{ended - wall_end:.0f} s after the wall"
    )
    assert ended - wall_end < 90  # not the half hour of retry_delay
    # Sent again after the wall: only the orders in flight when it rose (answered 429), never one that
    # the first try canceled.
    sent_before = {r.body["orderId"] for r in requests if r.received_at < proof.wall_started}
    again = {r.body["orderId"] for r in after} & sent_before
    assert len(again) <= 2, sorted(again)  # max_concurrency 2
    assert len(after) == len(WALL) - len(sent_before) + len(again)
    assert all(proof.emu.cancels_applied(i) == 1 for i in WALL)
    summary = proof.summaries[("wall", "return_value")]
    assert summary["canceled"] == list(WALL)
