"""Kibo's routes this provider calls: one definition for the hook, the metrics and the emulator."""

from __future__ import annotations

from typing import NamedTuple

CANCEL_PATH = "/api/v2/order/action/cancel"
ORDER_PATH = "/api/v2/order/{order_id}"
OAUTH_PATH = "/api/platform/applications/authtickets/oauth"
DEFAULT_AUTH_URL = "https://home.mozu.com" + OAUTH_PATH


class Route(NamedTuple):
    """A route by name (as the retry policy, the circuit breaker and the metrics call it)."""

    name: str
    method: str
    path: str  # with ``{order_id}`` where the order id goes

    def matches(self, method: str, path: str) -> bool:
        """Whether ``method path`` calls this route (any order id, any query string)."""
        return method == self.method and path.startswith(self.path.partition("{order_id}")[0])


ROUTES = (
    Route("oauth", "POST", OAUTH_PATH),
    Route("cancel", "POST", CANCEL_PATH),
    Route("get_order", "GET", ORDER_PATH),
)


def route_of(method: str, path: str) -> str:
    """The name of the route ``method path`` calls, or ``"other"``."""
    for route in ROUTES:
        if route.matches(method, path):
            return route.name
    return "other"
