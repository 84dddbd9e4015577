"""The provider's registration with Airflow: the single place that declares the `kibo` connection type.

Airflow 3.2+ renders the connection form from ``conn-fields`` and ``ui-field-behaviour`` below without
importing the hook; Airflow 3.0/3.1 call the hook's ``get_connection_form_widgets()`` and
``get_ui_field_behaviour()``, which are built from these same declarations.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_kibo_cancel import __version__

CONN_TYPE = "kibo"
DEFAULT_CONN_ID = "kibo_default"
HOOK_NAME = "Kibo Commerce"
HOOK_CLASS = "airflow_provider_kibo_cancel.hooks.kibo.KiboHook"

# Extra fields of the connection form, as JSON schema (Airflow 3.2+ ``conn-fields``).
CONN_FIELDS: dict[str, dict[str, Any]] = {
    "tenant_id": {
        "label": "Tenant ID",
        "description": "Your Kibo tenant number, e.g. 30294. Required; digits only.",
        "schema": {"type": ["string", "null"], "pattern": r"^[0-9]+$"},
    },
    "environment": {
        "label": "Environment",
        "description": "production or sandbox: selects {tenant}-translation[.sandbox].mozu.com.",
        "schema": {"type": ["string", "null"], "enum": ["sandbox", "production"], "default": "sandbox"},
    },
    "site_id": {
        "label": "Site ID",
        "description": "Optional site number, sent as x-vol-site for tenants that need it. Digits only.",
        "schema": {"type": ["string", "null"], "pattern": r"^[0-9]*$"},
    },
    "timeout": {
        "label": "Request timeout (seconds)",
        "description": "Connect and read timeout for one HTTP request. Default 30.",
        "schema": {"type": ["number", "null"], "minimum": 0.1, "maximum": 600},
    },
    "access_token": {
        "label": "Access token",
        "description": "Optional pre-issued bearer token, used only when Application Key and Shared "
        "Secret are empty. It cannot be refreshed.",
        "schema": {"type": ["string", "null"], "format": "password"},
    },
    "order_id_field": {
        "label": "Order id field",
        "description": "How the cancel body spells the order id: orderId (the specification's, the "
        "default) or orderID (as Kibo's own pages spell it). Change it only if Kibo answers 400 naming it.",
        "schema": {"type": ["string", "null"], "enum": ["orderId", "orderID"], "default": "orderId"},
    },
    # The tenant budget (docs/rate-limits.md): one pause, budget and learned rate per tenant.
    "tenant_requests_per_second": {
        "label": "Tenant requests per second",
        "description": "Optional: the most requests per second this deployment sends to the tenant, every "
        "task and worker together (shared through the Redis connection below; per task without it). "
        "Empty: no cap; the rate is learned from Kibo's 429s.",
        "schema": {"type": ["number", "null"], "exclusiveMinimum": 0},
    },
    "rate_limit_conn_id": {
        "label": "Rate limit Redis connection",
        "description": "Optional: the id of an Airflow connection to Redis (redis:// or rediss://) that "
        "holds the tenant's shared 429 pause, budget and learned rate. Needs the [redis] extra.",
        "schema": {"type": ["string", "null"], "pattern": r"^[A-Za-z0-9_-]*$"},
    },
    "auth_url": {
        "label": "OAuth URL override",
        "description": "Optional. Default: Kibo's home.mozu.com OAuth endpoint, or "
        "{Base URL override}/api/platform/applications/authtickets/oauth when a base URL is set.",
        "schema": {"type": ["string", "null"]},
    },
}

UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["schema", "port"],
    "relabeling": {
        "login": "Application Key",
        "password": "Shared Secret",
        "host": "Base URL override",
    },
    "placeholders": {
        "login": "Application key (OAuth client id) from Kibo Dev Center",
        "password": "Shared secret (OAuth client secret)",
        "host": "Optional, e.g. http://127.0.0.1:8080 for the local emulator; empty = Kibo's host",
        "tenant_id": "30294",
        "site_id": "50525",
        "timeout": "30",
        "tenant_requests_per_second": "e.g. 40; empty = learn the limit",
        "rate_limit_conn_id": "e.g. kibo_redis",
    },
}


def provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-provider-kibo-cancel",
        "name": "Kibo Commerce",
        "description": "Cancel orders in Kibo Commerce (translated Order Management API) from Airflow.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Kibo Commerce",
                "external-doc-url": "https://docs.kibocommerce.com/",
                "tags": ["service"],
            }
        ],
        "hooks": [
            {
                "integration-name": "Kibo Commerce",
                "python-modules": ["airflow_provider_kibo_cancel.hooks.kibo"],
            }
        ],
        "operators": [
            {
                "integration-name": "Kibo Commerce",
                "python-modules": [
                    "airflow_provider_kibo_cancel.operators.cancel_order",
                    "airflow_provider_kibo_cancel.operators.bulk_cancel",
                ],
            }
        ],
        "triggers": [
            {
                "integration-name": "Kibo Commerce",
                "python-modules": ["airflow_provider_kibo_cancel.triggers.retry_after"],
            }
        ],
        # kibo://{tenant_id}/orders/canceled names "orders were canceled in that tenant" (assets.py); the
        # handler refuses a tenant that is not digits when a DAG file builds such an asset.
        "asset-uris": [
            {"schemes": ["kibo"], "handler": "airflow_provider_kibo_cancel.assets.normalize_kibo_uri"}
        ],
        "connection-types": [
            {
                "connection-type": CONN_TYPE,
                "hook-class-name": HOOK_CLASS,
                "hook-name": HOOK_NAME,
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
                "conn-fields": CONN_FIELDS,
            }
        ],
    }


def get_provider_info() -> dict[str, Any]:
    """Entry point for Airflow's provider discovery (``apache_airflow_provider``)."""
    return provider_info()
