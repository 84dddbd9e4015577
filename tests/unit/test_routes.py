"""routes.py: the one route table the hook, the metrics and the emulator share."""

from __future__ import annotations

import pytest

from airflow_provider_kibo_cancel import metrics
from airflow_provider_kibo_cancel.routes import CANCEL_PATH, OAUTH_PATH, ORDER_PATH, ROUTES, route_of


@pytest.mark.parametrize(
    ("method", "path", "route"),
    [
        ("POST", OAUTH_PATH, "oauth"),
        ("POST", CANCEL_PATH, "cancel"),
        ("GET", ORDER_PATH.format(order_id=1001), "get_order"),
        ("GET", ORDER_PATH.format(order_id=1001) + "?responseFields=orderStatus", "get_order"),
        ("GET", CANCEL_PATH, "get_order"),  # a GET under /api/v2/order/ reads an order
        ("DELETE", ORDER_PATH.format(order_id=1001), "other"),
        ("GET", "/api/platform/other", "other"),
    ],
)
def test_route_of_names_the_route_a_request_calls(method: str, path: str, route: str) -> None:
    assert route_of(method, path) == route
    assert metrics.endpoint_of(method, path) == route  # request durations are grouped by the same table


def test_every_route_has_its_duration_metric() -> None:
    assert (*(route.name for route in ROUTES), "other") == metrics.ENDPOINTS
    for endpoint in metrics.ENDPOINTS:
        assert f"{metrics.PREFIX}.http.duration.{endpoint}" in metrics.METRICS
