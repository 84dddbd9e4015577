"""What Kibo's answers say about a connection: the hint a failed call carries, and the verdict of
``KiboHook.test_connection()``'s probe (a read of order 1)."""

from __future__ import annotations

import requests

from airflow_provider_kibo_cancel.connection import KiboConnectionSettings
from airflow_provider_kibo_cancel.hooks.responses import KIBO_ERROR_KEYS, error_from, excerpt


def probe_verdict(
    response: requests.Response, settings: KiboConnectionSettings, url_path: str
) -> tuple[bool, str]:
    """
    Whether the probe's answer is Kibo's, for this tenant: the order, or a 404 with an error body in
    Kibo's shape; and what to tell the person testing the connection.
    """
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    if status == 200 and isinstance(body, dict) and ("orderID" in body or "orderId" in body):
        pass
    elif status == 404 and isinstance(body, dict) and KIBO_ERROR_KEYS & body.keys():
        pass  # authenticated and authorised for the tenant: order 1 simply does not exist
    elif status >= 300 and status != 404:
        error = error_from(response, f"Kibo GET {url_path} failed", order_id=None)
        if status == 401:
            return False, f"Kibo refused the token for tenant {settings.tenant_id}: {error}"
        if status == 403:
            return False, f"The credentials are not allowed for this tenant or site: {error}"
        return False, str(error)
    else:
        content_type = response.headers.get("Content-Type", "no content type")
        return False, (
            f"{settings.base_url} does not answer like Kibo: GET {url_path} gave HTTP {status} "
            f"({content_type}): {excerpt(response)!r}. Check the connection's host and tenant."
        )
    return True, (
        f"Connected to Kibo tenant {settings.tenant_id} ({settings.environment}) at {settings.base_url}"
    )


def connection_hint(
    settings: KiboConnectionSettings, status: int, response: requests.Response, *, refreshable: bool
) -> str | None:
    """What to change in the connection for an answer that points at it (401, 403, a misspelt field)."""
    conn = f"connection {settings.conn_id!r}"
    if status == 401 and not refreshable:
        return (
            f"Kibo refused the pre-issued access token (extra access_token) of {conn}; it cannot be "
            "refreshed: put a new one there, or set the Application Key and Shared Secret instead"
        )
    if status == 401:
        return (
            f"Kibo refused the token: check the Application Key (login) and Shared Secret (password) "
            f"of {conn}"
        )
    if status == 403:
        site = f" and site {settings.site_id}" if settings.site_id else ""
        return (
            f"Kibo refused tenant {settings.tenant_id}{site} for these credentials: check the "
            f"Tenant ID and Site ID (extras tenant_id, site_id) of {conn}, and the application's "
            "permissions in Kibo"
        )
    if status == 400 and "orderid" in response.text[:2000].lower():
        spelling = settings.order_id_field
        other = "orderID" if spelling == "orderId" else "orderId"
        return (
            f"Kibo's answer names the order id field, sent as {spelling!r}; if your tenant expects "
            f"{other!r}, set extra order_id_field to {other!r} in {conn}"
        )
    return None
