"""The provider as Airflow's CLI lists it: `airflow providers list` and `airflow providers hooks`."""

from __future__ import annotations

import json

import airflow_provider_kibo_cancel
from devtools.airflow_local import AirflowEnv


def test_airflow_lists_the_provider_and_its_connection_type(airflow_env: AirflowEnv) -> None:
    # Airflow 3.0 prints log lines before the JSON: the JSON is the last line.
    providers = json.loads(airflow_env.airflow("providers", "list", "-o", "json").stdout.splitlines()[-1])
    ours = [p for p in providers if p["package_name"] == "airflow-provider-kibo-cancel"]
    assert ours and ours[0]["version"] == airflow_provider_kibo_cancel.__version__
    hooks = json.loads(airflow_env.airflow("providers", "hooks", "-o", "json").stdout.splitlines()[-1])
    kibo = [h for h in hooks if h["connection_type"] == "kibo"]
    assert kibo and kibo[0]["class"] == "airflow_provider_kibo_cancel.hooks.kibo.KiboHook"
