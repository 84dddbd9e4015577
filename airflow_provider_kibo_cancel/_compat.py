"""Airflow imports that moved between 3.0 and 3.3, resolved once here."""

from __future__ import annotations

try:  # Airflow 3.1+
    from airflow.sdk import BaseHook
except ImportError:  # pragma: no cover - Airflow 3.0
    from airflow.hooks.base import BaseHook  # type: ignore[no-redef,attr-defined]

try:  # Airflow 3.1+
    from airflow.sdk.log import mask_secret
except ImportError:  # pragma: no cover - Airflow 3.0
    from airflow.sdk.execution_time.secrets_masker import mask_secret  # type: ignore[no-redef]

from airflow.sdk import BaseOperator

try:
    from airflow.sdk.exceptions import AirflowFailException
except ImportError:  # pragma: no cover - Airflow 3.0
    from airflow.exceptions import AirflowFailException  # type: ignore[no-redef]

try:  # Airflow 3.2+
    from airflow.sdk.exceptions import TaskDeferred
except ImportError:  # pragma: no cover - Airflow 3.0/3.1
    from airflow.exceptions import TaskDeferred  # type: ignore[attr-defined,no-redef,unused-ignore]

try:
    from airflow.sdk.exceptions import AirflowNotFoundException
except ImportError:  # pragma: no cover - Airflow 3.0
    from airflow.exceptions import AirflowNotFoundException  # type: ignore[attr-defined,no-redef,unused-ignore]

try:  # Airflow 3.2+
    from airflow.sdk.configuration import conf
except ImportError:  # pragma: no cover - Airflow 3.0/3.1
    from airflow.configuration import conf  # type: ignore[no-redef,unused-ignore]


def default_deferrable() -> bool:
    """``[operators] default_deferrable``, the default of every deferrable operator's ``deferrable``."""
    return bool(conf.getboolean("operators", "default_deferrable", fallback=False))


__all__ = [
    "AirflowFailException",
    "AirflowNotFoundException",
    "BaseHook",
    "BaseOperator",
    "TaskDeferred",
    "conf",
    "default_deferrable",
    "mask_secret",
]
