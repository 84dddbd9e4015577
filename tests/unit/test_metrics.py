"""metrics.py: a metric that cannot be sent never fails a task, the endpoint names, and a DAG file's parse
loads no metrics code. Every metric's name and count in a real DAG run: tests/integration/test_signals.py."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from airflow_provider_kibo_cancel import metrics


def test_a_metric_that_cannot_be_sent_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    tried: list[str] = []

    class Broken:
        def incr(self, *args: Any) -> None:
            tried.append("incr")
            raise OSError("statsd host unreachable")

        def timing(self, *args: Any) -> None:
            tried.append("timing")
            raise RuntimeError("backend broken")

    monkeypatch.setattr(metrics, "_get_stats", Broken)
    metrics.cancel_outcome("canceled")
    metrics.cancel_outcomes({"canceled": [1], "failed": "not a list"})
    metrics.retry("429")
    metrics.token_fetch()
    metrics.deferral()
    metrics.request_duration("POST", "http://x/api/v2/order/action/cancel", 0.01)
    metrics.cancel_error(ValueError("x"))
    assert "incr" in tried and "timing" in tried  # every metric was tried, and each failure swallowed

    def unimportable() -> Any:
        raise ImportError("no Stats here")

    monkeypatch.setattr(metrics, "_get_stats", unimportable)
    metrics.deferral()


def test_endpoints_of_request_paths() -> None:
    assert metrics.endpoint_of("POST", "/api/platform/applications/authtickets/oauth") == "oauth"
    assert metrics.endpoint_of("POST", "/api/v2/order/action/cancel") == "cancel"
    assert metrics.endpoint_of("GET", "/api/v2/order/1001") == "get_order"
    assert metrics.endpoint_of("GET", "/_emulator/state") == "other"


def test_parsing_a_dag_file_loads_no_metrics_asset_or_plugin_code() -> None:
    """What a DAG file pays at parse time: the operator modules, not the code they need only to run."""
    code = (
        "import json, sys, airflow.sdk\n"
        "before = set(sys.modules)\n"
        "import airflow_provider_kibo_cancel.operators.cancel_order, "
        "airflow_provider_kibo_cancel.operators.bulk_cancel\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = json.loads(out.strip().splitlines()[-1])
    unwanted = (
        "airflow_provider_kibo_cancel.metrics",
        "airflow_provider_kibo_cancel.assets",
        "airflow_provider_kibo_cancel.pytest_plugin",
        "airflow_provider_kibo_cancel.hooks",
        "airflow.stats",
        "airflow.sdk.observability",
        "statsd",
        "requests",
    )
    assert [m for m in loaded if m.startswith(unwanted)] == [], loaded
