"""The emulator's in-flight high-water mark: what the distributed test measures a pool with."""

from __future__ import annotations

import threading
import time

import requests

from airflow_provider_kibo_cancel.emulator import KiboEmulator
from tests.support import APP_KEY, SHARED_SECRET, TENANT


def _token(url: str) -> str:
    response = requests.post(
        f"{url}/api/platform/applications/authtickets/oauth",
        json={"client_id": APP_KEY, "client_secret": SHARED_SECRET, "grant_type": "client_credentials"},
        timeout=5,
    )
    return str(response.json()["access_token"])


def _cancel(url: str, token: str, order_id: int) -> int:
    response = requests.post(
        f"{url}/api/v2/order/action/cancel",
        json={"orderId": order_id, "dispositionReason": "created_by_mistake"},
        headers={"Authorization": f"Bearer {token}", "x-vol-tenant": TENANT},
        timeout=10,
    )
    return response.status_code


def _settled(emu: KiboEmulator) -> dict[str, int]:
    """The counts once every handler has left: a client holds its answer a moment before the server
    thread that wrote it has finished, so "now" may still count it right after the reply."""
    deadline = time.monotonic() + 5
    while emu.in_flight()["now"] and time.monotonic() < deadline:
        time.sleep(0.01)
    return emu.in_flight()


def test_in_flight_counts_concurrent_cancels_and_resets() -> None:
    # Each cancel is held 1 s, and the three start together: they overlap even on a loaded machine
    # (with 0.3 s, a CI run under load saw the third arrive after the first had left).
    with KiboEmulator(tenants=(TENANT,), clients={APP_KEY: SHARED_SECRET}, latency=1.0) as emu:
        emu.add_orders(range(1000, 1010))
        token = _token(emu.url)
        statuses: list[int] = []
        start = threading.Barrier(3)

        def cancel(order_id: int) -> None:
            start.wait()
            statuses.append(_cancel(emu.url, token, order_id))

        threads = [threading.Thread(target=cancel, args=(1000 + i,)) for i in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert statuses == [200, 200, 200]
        assert _settled(emu) == {"now": 0, "max": 3}

        # The other endpoints do not count; the state endpoint shows it; reset starts a new mark.
        state = requests.get(f"{emu.url}/_emulator/state", timeout=5).json()
        assert state["cancels_in_flight"] == {"now": 0, "max": 3}
        assert requests.post(f"{emu.url}/_emulator/in_flight/reset", timeout=5).ok
        assert emu.in_flight() == {"now": 0, "max": 0}
        assert _cancel(emu.url, token, 1005) == 200
        assert requests.get(f"{emu.url}/api/v2/order/1005", timeout=5).status_code == 401  # no token
        assert _settled(emu) == {"now": 0, "max": 1}
