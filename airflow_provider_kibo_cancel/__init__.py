"""Apache Airflow provider for Kibo Commerce's Cancel Order API.

Importing this package is deliberately cheap (no Airflow import, no network): Airflow calls
``get_provider_info()`` while discovering providers, and DAG files import the operators at every parse.
"""

from __future__ import annotations

__version__ = "0.1.0"

# After __version__: provider_info reads it from this module.
from airflow_provider_kibo_cancel.provider_info import get_provider_info

__all__ = ["__version__", "get_provider_info"]
