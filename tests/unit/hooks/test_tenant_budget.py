"""The tenant budget within one process: the emulator's tenant-wide limit, the per-task fallback and
the learning arithmetic (no Redis, no Airflow processes)."""

from __future__ import annotations

import time

import requests

from airflow_provider_kibo_cancel.emulator import KiboEmulator
from airflow_provider_kibo_cancel.emulator.__main__ import _parser
from tests.support import APP_KEY, SHARED_SECRET, TENANT


def _token(emu: KiboEmulator) -> str:
    answer = requests.post(
        emu.url + "/api/platform/applications/authtickets/oauth",
        json={"client_id": APP_KEY, "client_secret": SHARED_SECRET, "grant_type": "client_credentials"},
        timeout=5,
    )
    token: str = answer.json()["access_token"]
    return token


def test_the_emulator_blocks_the_tenant_beyond_its_limit_for_retry_after() -> None:
    with KiboEmulator(tenants=(TENANT,), clients={APP_KEY: SHARED_SECRET}) as emu:
        emu.add_orders(range(1, 40))
        emu.tenant_limit.configure(10, retry_after=2)
        headers = {"Authorization": f"Bearer {_token(emu)}", "x-vol-tenant": TENANT}
        with requests.Session() as session:
            statuses = [
                session.get(f"{emu.url}/api/v2/order/{i}", headers=headers, timeout=5) for i in range(1, 16)
            ]
        assert [r.status_code for r in statuses] == [200] * 10 + [429] * 5
        assert statuses[10].headers["Retry-After"] == "2" and statuses[10].content == b""
        assert emu.tenant_limit.snapshot()["episodes"] == 1
        # OAuth is not the tenant's host: not counted, not blocked.
        assert _token(emu)
        time.sleep(2.1)
        assert requests.get(f"{emu.url}/api/v2/order/1", headers=headers, timeout=5).status_code == 200


def test_the_tenant_limit_is_set_through_the_control_api_and_the_command_line() -> None:
    with KiboEmulator(tenants=(TENANT,)) as emu:
        control = emu.url + "/_emulator/tenant_limit"
        limit = {"requests_per_second": 50, "retry_after": 15}
        answer = requests.post(control, json=limit, timeout=5).json()
        assert (answer["requests_per_second"], answer["retry_after"], answer["episodes"]) == (50.0, 15.0, 0)
        assert requests.get(control, timeout=5).json()["requests_per_second"] == 50
        requests.post(control, json={"requests_per_second": None}, timeout=5)
        assert emu.tenant_limit.requests_per_second is None
    args = _parser().parse_args(["--tenant-limit", "50", "--tenant-retry-after", "15"])
    assert (args.tenant_limit, args.tenant_retry_after) == (50.0, 15.0)
