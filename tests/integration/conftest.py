"""Everything under tests/integration needs processes beyond pytest's (Airflow, redis-server): marked
``integration`` so a quick run can leave it out (``-m "not integration"``)."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(item.path).parents:
            item.add_marker(pytest.mark.integration)
