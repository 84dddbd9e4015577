"""The example DAGs import cleanly and run end to end in real Airflow against the emulator."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.version import Version

from airflow_provider_kibo_cancel.emulator import KiboEmulator
from devtools.airflow_local import AirflowEnv
from tests.support import APP_KEY, SHARED_SECRET, TENANT, kibo_connection

EXAMPLES = Path(__file__).parents[2] / "example_dags"


@pytest.fixture(scope="module")
def examples_env(airflow_env: AirflowEnv) -> AirflowEnv:
    """The session's Airflow home, reading the example_dags folder."""
    env = AirflowEnv(airflow_env.home, EXAMPLES)
    env.airflow("pools", "set", "kibo_api", "4", "Kibo API calls")
    return env


@pytest.fixture
def seeded_emulator() -> Iterator[KiboEmulator]:
    with KiboEmulator(tenants=(TENANT,), clients={APP_KEY: SHARED_SECRET}) as emu:
        emu.add_orders(range(1000, 2000))
        yield emu


def test_every_example_dag_imports_without_errors() -> None:
    try:
        # Imported here: DagBag's module depends on the Airflow version.
        from airflow.dag_processing.dagbag import DagBag  # noqa: PLC0415
    except ImportError:  # Airflow < 3.1
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef,unused-ignore]  # noqa: PLC0415

    bag = DagBag(dag_folder=str(EXAMPLES))
    assert bag.import_errors == {}
    # The review example needs human-in-the-loop (Airflow 3.1+); on 3.0 its file defines no DAG.
    has_hitl = Version(Version(version("apache-airflow-core")).base_version) >= Version("3.1")
    assert set(bag.dag_ids) == {
        "example_kibo_cancel_order",
        "example_kibo_reconciliation",
        "example_kibo_bulk_reconciliation",
        *(["example_kibo_review_before_cancel"] if has_hitl else []),
        "example_kibo_canceled_orders_consumer",
    }
    single = bag.dags["example_kibo_cancel_order"]
    assert single.params.get_param("disposition_reason").schema["enum"] == [
        "customer_changed_mind",
        "created_by_mistake",
        "other",
    ]


def test_single_order_example_runs_with_conf(examples_env: AirflowEnv, seeded_emulator: KiboEmulator) -> None:
    result = examples_env.run_dag(
        "example_kibo_cancel_order",
        conf={"order_id": 1500, "disposition_reason": "created_by_mistake"},
        connections={"kibo_default": kibo_connection(seeded_emulator)},
    )
    assert result.state("cancel_order") == "success", result.output[-3000:]
    assert result.xcom[("cancel_order", -1)] == seeded_emulator.order(1500)
    assert result.xcom[("confirm", -1)] == "Order 1500 is CANCELED (total 47.5)"
    (cancel,) = seeded_emulator.requests_to("cancel")
    assert cancel.body == {"orderId": 1500, "dispositionReason": "created_by_mistake"}


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ('{"order_id": 0}', "Invalid input for param order_id: 0 is less than the minimum of 1"),
        (
            '{"disposition_reason": "oops"}',
            "Invalid input for param disposition_reason: 'oops' is not one of",
        ),
    ],
)
def test_single_order_example_rejects_a_bad_conf_before_running(
    examples_env: AirflowEnv, conf: str, message: str
) -> None:
    """The DAG's Params validate the trigger form (and conf) before any task runs."""
    proc = examples_env.airflow("dags", "test", "example_kibo_cancel_order", "-c", conf, check=False)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr


def test_reconciliation_example_cancels_every_order_in_the_csv(
    examples_env: AirflowEnv, seeded_emulator: KiboEmulator
) -> None:
    with (EXAMPLES / "data" / "orders_to_cancel.csv").open() as rows:
        expected = sorted(int(row["order_id"]) for row in csv.DictReader(rows))
    result = examples_env.run_dag(
        "example_kibo_reconciliation", connections={"kibo_default": kibo_connection(seeded_emulator)}
    )
    assert result.state("report") == "success", result.output[-3000:]
    assert result.xcom[("report", -1)] == {"canceled": expected, "count": len(expected)}
    assert all(seeded_emulator.cancels_applied(order_id) == 1 for order_id in expected)
    other = [r.body for r in seeded_emulator.requests_to("cancel") if r.body["dispositionReason"] == "other"]
    assert other == [
        {"orderId": 1003, "dispositionReason": "other", "dispositionOtherReason": "Duplicate of order 1001"}
    ]


def test_bulk_reconciliation_example_cancels_every_order_in_the_csv(
    examples_env: AirflowEnv, seeded_emulator: KiboEmulator
) -> None:
    seeded_emulator.add_orders([1002], status="CANCELED")  # canceled since the CSV was written
    result = examples_env.run_dag(
        "example_kibo_bulk_reconciliation", connections={"kibo_default": kibo_connection(seeded_emulator)}
    )
    assert result.state("report") == "success", result.output[-3000:]
    assert result.xcom[("report", -1)] == {
        "canceled": 4,
        "already_canceled": 1,
        "failed": 0,
        "invalid": 0,
        "duplicates": 0,
    }
    assert sorted(result.xcom[("cancel_orders", -1)]["canceled"]) == [1001, 1003, 1004, 1005]
