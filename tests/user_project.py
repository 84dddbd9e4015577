"""A user's project that tests its own DAG with the provider's pytest fixtures.

tests/integration/test_release.py writes these files outside the repository and runs their pytest
against the built wheel; tests/integration/test_readme.py checks that the README shows them as they
are here.
"""

from __future__ import annotations

DAG_FILE = """\
from airflow.sdk import dag

from airflow_provider_kibo_cancel.operators.cancel_order import CancelOrderOperator


@dag(schedule=None)
def cancel_customer_order():
    CancelOrderOperator(
        task_id="cancel",
        order_id="{{ dag_run.conf['order_id'] }}",
        disposition_reason="customer_changed_mind",
    )


DAG = cancel_customer_order()
"""

CONFTEST = """\
import atexit
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

DAGS = Path(__file__).parent.parent / "dags"
# Before anything imports Airflow, which reads its configuration once: a throwaway home for the tests,
# removed when pytest exits.
AIRFLOW_HOME = tempfile.TemporaryDirectory(prefix="airflow-home-")
atexit.register(AIRFLOW_HOME.cleanup)
os.environ["AIRFLOW_HOME"] = AIRFLOW_HOME.name
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAGS)
sys.path.insert(0, str(DAGS))  # as Airflow does for the dags folder


@pytest.fixture(scope="session", autouse=True)
def airflow_db():
    airflow = Path(sys.executable).with_name("airflow")
    subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True)
"""

TEST_FILE = """\
import cancel_customer_order


def test_the_dag_cancels_the_order(kibo_emulator, kibo_connection):
    run = cancel_customer_order.DAG.test(run_conf={"order_id": 1042})

    assert run.state == "success"
    assert kibo_emulator.order(1042)["orderStatus"] == "CANCELED"
    (cancel,) = kibo_emulator.requests_to("cancel")
    assert cancel.body == {"orderId": 1042, "dispositionReason": "customer_changed_mind"}
"""

FILES = {
    "dags/cancel_customer_order.py": DAG_FILE,
    "tests/conftest.py": CONFTEST,
    "tests/test_cancel_customer_order.py": TEST_FILE,
}
