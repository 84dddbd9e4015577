"""Constants and helpers shared by the tests."""

from __future__ import annotations

from typing import Any

from airflow_provider_kibo_cancel.emulator import KiboEmulator

APP_KEY = "demo-app-key"
SHARED_SECRET = "s3cr3t-shared-value-4711"
TENANT = "30294"
OPEN_ORDERS = range(1000, 1100)
CANCELED_ORDERS = range(2000, 2010)
COMPLETED_ORDER = 3000


def kibo_connection(emu: KiboEmulator | str, **extra: Any) -> dict[str, Any]:
    """The JSON form of a `kibo` connection to the emulator (or its URL); fast retries unless overridden."""
    fields: dict[str, Any] = {"tenant_id": TENANT, "environment": "sandbox", "backoff_base": 0.05}
    fields.update(extra)
    login = fields.pop("login", APP_KEY)
    password = fields.pop("password", SHARED_SECRET)
    return {
        "conn_type": "kibo",
        "login": login,
        "password": password,
        "host": emu if isinstance(emu, str) else emu.url,
        "extra": fields,
    }


def permanent_failure_line(message: str) -> str:
    """How a task log shows a permanent Kibo error that ended the task: raised as the Kibo error itself
    where the Kibo retry policy fails it (Airflow 3.3+), as AirflowFailException before."""
    import re

    kibo_error = r"airflow_provider_kibo_cancel\.exceptions\.Kibo\w*Error"
    return rf"(AirflowFailException|{kibo_error}): {re.escape(message)}"


def permanent_errors() -> tuple[type[BaseException], ...]:
    """What ``operator.execute()`` raises for an error no retry can mend (see ``permanent_failure_line``)."""
    from airflow_provider_kibo_cancel._compat import AirflowFailException
    from airflow_provider_kibo_cancel.exceptions import KiboError

    return (AirflowFailException, KiboError)


def assert_no_retry(operator: Any, exc: BaseException) -> None:
    """The task would fail without Airflow retries: AirflowFailException, or the Kibo policy says FAIL."""
    from airflow_provider_kibo_cancel._compat import AirflowFailException

    if isinstance(exc, AirflowFailException):
        return
    decision = operator.retry_policy.evaluate(exc, 1, 3)
    assert decision.action.value == "fail", (exc, decision)
