"""The ``kibo`` connection form for Airflow 3.0/3.1, built from provider_info's declaration.

Airflow 3.2+ reads ``conn-fields`` and ``ui-field-behaviour`` from ``get_provider_info()`` without
importing the hook; 3.0/3.1 call the hook's ``get_connection_form_widgets()`` and
``get_ui_field_behaviour()``, which delegate here. One declaration feeds both (tests keep them in step).
"""

from __future__ import annotations

from typing import Any

from airflow_provider_kibo_cancel.provider_info import CONN_FIELDS, UI_FIELD_BEHAVIOUR


def connection_form_widgets() -> dict[str, Any]:
    """wtforms fields for the extras; wtforms is imported here, only when a 3.0/3.1 UI asks."""
    # wtforms comes with the Flask UI of Airflow 3.0/3.1 only: imported when that UI asks, never at parse.
    from wtforms import PasswordField, StringField  # noqa: PLC0415
    from wtforms.validators import Optional, Regexp  # noqa: PLC0415

    widgets: dict[str, Any] = {}
    for name, field in CONN_FIELDS.items():
        schema = field["schema"]
        validators: list[Any] = [Optional()]
        if "pattern" in schema:
            validators.append(Regexp(schema["pattern"], message=field["description"]))
        field_class = PasswordField if schema.get("format") == "password" else StringField
        widgets[name] = field_class(
            field["label"],
            description=field["description"],
            validators=validators,
            default=schema.get("default"),
        )
    return widgets


def ui_field_behaviour() -> dict[str, Any]:
    return {
        "hidden_fields": UI_FIELD_BEHAVIOUR["hidden-fields"],
        "relabeling": UI_FIELD_BEHAVIOUR["relabeling"],
        "placeholders": UI_FIELD_BEHAVIOUR["placeholders"],
    }
