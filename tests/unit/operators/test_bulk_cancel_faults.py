"""Sustained faults inside DAG runs in process (`dag.test()`): a stop that holds, and failing fast
without retries."""

from __future__ import annotations

import time
from collections.abc import Iterator
from importlib.metadata import version

import pytest

from airflow_provider_kibo_cancel.emulator import KiboEmulator
from tests.dag_runs import Run, run_in_process
from tests.support import kibo_connection, kibo_emulator

pytestmark = pytest.mark.dag_run

AIRFLOW_3_0 = version("apache-airflow-core").startswith("3.0.")


def emulator() -> KiboEmulator:
    emu = kibo_emulator(latency=0.1)
    emu.add_orders(range(1000, 1400))
    return emu


@pytest.fixture(scope="module")
def stop_run() -> Iterator[Run]:
    with emulator() as emu:
        result = run_in_process("kibo_bulk_stop", connections={"kibo_default": kibo_connection(emu)})
        time.sleep(2)  # anything still running would reach the emulator meanwhile
        yield result, emu


@pytest.fixture(scope="module")
def fail_fast_run() -> Iterator[Run]:
    with emulator() as emu:
        emu.latency = 0
        connections = {
            "kibo_default": kibo_connection(emu),
            "kibo_wrong_secret": kibo_connection(emu, password="rotated-away"),
        }
        yield run_in_process("kibo_fail_fast", connections=connections), emu


def test_a_timed_out_bulk_run_sends_nothing_after_it_ended(stop_run: Run) -> None:
    result, emu = stop_run
    assert result.state("bulk") == "failed"
    if AIRFLOW_3_0:
        # Airflow 3.0's `dags test` lets the task's AirflowTaskTimeout end the whole command once the task
        # is marked failed, so the downstream task never runs there; the task runner of a real deployment
        # does not. The check below still holds: nothing arrived after the task ended.
        assert result.state("outlive") is None
    else:
        assert result.state("outlive") == "success"  # it ran 4 s after the bulk task ended
    ended = result.ended_at[("bulk", -1)]
    cancels = emu.requests_to("cancel")
    assert cancels, "the run sent nothing before its timeout"
    late = [r for r in cancels if r.received_at > ended]
    assert late == [], f"{len(late)} cancels reached Kibo after the bulk task ended"
    assert "AirflowTaskTimeout" in result.output


def test_a_timed_out_bulk_run_accounts_for_every_order(stop_run: Run) -> None:
    result, emu = stop_run
    summary = result.xcoms[("bulk", -1, "summary")]
    buckets = ("canceled", "already_canceled", "not_attempted")
    ids = [i for b in buckets for i in summary[b]] + [f["order_id"] for f in summary["failed"]]
    assert sorted(ids) == list(range(1000, 1300))  # every order exactly once
    assert summary["not_attempted"], "a 3 s run of 300 orders at 0.1 s each cannot have sent them all"
    assert summary["halted"] == "stopped"
    assert summary["canceled"] == sorted(summary["canceled"])  # input order, not completion order
    applied = {int(k) for k, v in emu.snapshot()["cancels_applied"].items() if v}
    in_flight = {f["order_id"] for f in summary["failed"] if f["may_have_applied"]}
    assert set(summary["canceled"]) <= applied <= set(summary["canceled"]) | in_flight
    assert not applied & set(summary["not_attempted"])


def test_a_refused_secret_costs_one_oauth_request_no_cancel_and_no_retry(fail_fast_run: Run) -> None:
    result, emu = fail_fast_run
    assert result.state("wrong_secret") == "failed"
    assert result.tries[("wrong_secret", -1)] == 1
    assert len(emu.requests_to("oauth")) == 2  # the wrong secret once; the good one for the other task
    assert not [r for r in emu.requests_to("cancel") if r.body["orderId"] < 1300]
    summary = result.xcoms[("wrong_secret", -1, "summary")]
    assert summary["not_attempted"] == list(range(1000, 1300))
    assert "rotated-away" not in result.output


def test_a_missing_connection_fails_at_once_naming_it(fail_fast_run: Run) -> None:
    result, _ = fail_fast_run
    assert result.state("missing_connection") == "failed"
    assert result.tries[("missing_connection", -1)] == 1
    assert "The Kibo connection 'kibo_no_such_connection' does not exist" in result.output


def test_operator_settings_are_checked_in_execute(fail_fast_run: Run) -> None:
    result, _ = fail_fast_run
    assert result.state("bad_settings") == "failed"
    assert result.tries[("bad_settings", -1)] == 1
    assert "max_concurrency must be an integer from 1 to 64, got 0" in result.output
    assert "progress_interval must be a positive number of seconds, got 0" in result.output


def test_an_unpublished_reason_is_warned_about_once_per_run(fail_fast_run: Run) -> None:
    result, emu = fail_fast_run
    assert result.state("unpublished_reasons") == "success"
    warnings = {
        line.split("WARNING", 1)[-1] for line in result.output.splitlines() if "Kibo does not publish" in line
    }
    # One warning (Airflow 3.0's `dags test` prints each task log line twice, hence the set).
    assert len({w[w.index("40 orders") :] for w in warnings}) == 1, warnings
    assert "40 orders use a disposition_reason Kibo does not publish ('fraud_suspected': 40)" in result.output
    assert "is not one Kibo publishes" not in result.output  # no per-order warning
    assert len([r for r in emu.requests_to("cancel") if r.body["orderId"] >= 1300]) == 40
