"""Registration with Airflow: entry point, provider schema, the connection form in both declarations."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import distribution
from pathlib import Path

import airflow
import jsonschema
import pytest

import airflow_provider_kibo_cancel
from airflow_provider_kibo_cancel import get_provider_info
from airflow_provider_kibo_cancel.hooks.kibo import KiboHook


def test_entry_point_points_at_get_provider_info() -> None:
    dist = distribution("airflow-provider-kibo-cancel")
    (entry,) = [ep for ep in dist.entry_points if ep.group == "apache_airflow_provider"]
    assert entry.value == "airflow_provider_kibo_cancel:get_provider_info"
    assert entry.load()()["package-name"] == dist.metadata["Name"] == "airflow-provider-kibo-cancel"
    assert (Path(airflow_provider_kibo_cancel.__file__).parent / "py.typed").exists()
    assert dist.version == airflow_provider_kibo_cancel.__version__


def test_provider_info_matches_airflows_schema() -> None:
    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    jsonschema.validate(get_provider_info(), schema)
    (conn_type,) = get_provider_info()["connection-types"]
    assert conn_type["connection-type"] == "kibo"
    assert conn_type["hook-class-name"] == "airflow_provider_kibo_cancel.hooks.kibo.KiboHook"
    assert conn_type["hook-name"] == KiboHook.hook_name


def test_hook_attributes() -> None:
    assert (KiboHook.conn_type, KiboHook.conn_name_attr, KiboHook.default_conn_name) == (
        "kibo",
        "kibo_conn_id",
        "kibo_default",
    )


def test_python_form_methods_match_the_declarative_fields() -> None:
    """Airflow 3.0/3.1 read the hook's methods, 3.2+ the provider info: both must show the same form."""
    (conn_type,) = get_provider_info()["connection-types"]
    declared, behaviour = conn_type["conn-fields"], conn_type["ui-field-behaviour"]
    widgets = KiboHook.get_connection_form_widgets()
    assert set(widgets) == set(declared)
    for name, widget in widgets.items():
        field = declared[name]
        assert widget.args[0] == field["label"]
        assert widget.kwargs["description"] == field["description"]
        assert widget.kwargs["default"] == field["schema"].get("default")
        assert (widget.field_class.__name__ == "PasswordField") == (
            field["schema"].get("format") == "password"
        )
    assert KiboHook.get_ui_field_behaviour() == {
        "hidden_fields": behaviour["hidden-fields"],
        "relabeling": behaviour["relabeling"],
        "placeholders": behaviour["placeholders"],
    }


def test_environment_dropdown_defaults_to_sandbox() -> None:
    (conn_type,) = get_provider_info()["connection-types"]
    schema = conn_type["conn-fields"]["environment"]["schema"]
    assert (schema["enum"], schema["default"]) == (["sandbox", "production"], "sandbox")
    assert conn_type["ui-field-behaviour"]["hidden-fields"] == ["schema", "port"]


def test_order_id_field_dropdown_defaults_to_the_specifications_spelling() -> None:
    (conn_type,) = get_provider_info()["connection-types"]
    schema = conn_type["conn-fields"]["order_id_field"]["schema"]
    assert (schema["enum"], schema["default"]) == (["orderId", "orderID"], "orderId")


def test_importing_the_package_does_not_import_airflow() -> None:
    code = (
        "import sys, airflow_provider_kibo_cancel as p; p.get_provider_info(); "
        "print(sorted(m for m in sys.modules if m == 'airflow' or m.startswith(('airflow.', 'requests'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.newest_only
def test_no_deprecated_airflow_imports_on_the_newest_release() -> None:
    code = (
        "import json, warnings, airflow.sdk\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    import airflow_provider_kibo_cancel.hooks.kibo, airflow_provider_kibo_cancel.emulator\n"
        "    import airflow_provider_kibo_cancel.operators.cancel_order as c, "
        "airflow_provider_kibo_cancel.operators.bulk_cancel as b\n"
        "    c.CancelOrderOperator(task_id='t', order_id=1, disposition_reason='other')\n"
        "    b.BulkCancelOrdersOperator(task_id='b', orders=[1])\n"
        "print(json.dumps([f'{w.category.__name__}: {w.message}' for w in caught]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == []
