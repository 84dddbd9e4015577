"""Apache Airflow provider for Kibo Commerce's Cancel Order API.

Importing this package is deliberately cheap (no Airflow import, no network): Airflow calls
``get_provider_info()`` while discovering providers, and DAG files import the operators at every parse.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "get_provider_info"]


def get_provider_info() -> dict[str, Any]:
    """Entry point for Airflow's provider discovery (``apache_airflow_provider``)."""
    from airflow_provider_kibo_cancel.provider_info import provider_info

    return provider_info()
