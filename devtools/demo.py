"""`make demo`: cancel an order through a real Airflow DAG run against the local Kibo emulator.

Sets up an Airflow home in .airflow-demo/ (SQLite), starts the emulator on a free 127.0.0.1 port,
runs example_dags/example_kibo_cancel_order.py with a dag_run.conf, prints the order that landed in XCom,
and stops the emulator. Offline after `make install`; safe to re-run.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from airflow_provider_kibo_cancel.emulator import KiboEmulator
from devtools.airflow_local import AirflowEnv

ROOT = Path(__file__).resolve().parent.parent
DAG_ID = "example_kibo_cancel_order"
CONF = {"order_id": 1003, "disposition_reason": "other", "note": "Customer called to cancel"}
APP_KEY, SHARED_SECRET, TENANT = "demo-app-key", "demo-shared-secret", "30294"


def main() -> int:
    started = time.monotonic()
    airflow = AirflowEnv(ROOT / ".airflow-demo", ROOT / "example_dags")
    airflow.home.mkdir(exist_ok=True)
    print(f"1/4 Airflow home {airflow.home} (SQLite): migrating the metadata database ...", flush=True)
    airflow.migrate()

    with KiboEmulator(tenants=(TENANT,), clients={APP_KEY: SHARED_SECRET}) as emulator:
        emulator.add_orders(range(1000, 2000))
        print(f"2/4 Kibo emulator on {emulator.url} (open orders 1000-1999)", flush=True)
        connection = {
            "conn_type": "kibo",
            "login": APP_KEY,
            "password": SHARED_SECRET,
            "host": emulator.url,
            "extra": {"tenant_id": TENANT, "environment": "sandbox"},
        }
        print(f"3/4 airflow dags test {DAG_ID} -c '{json.dumps(CONF)}' ...", flush=True)
        result = airflow.run_dag(DAG_ID, conf=CONF, connections={"kibo_default": connection})
        requests_seen = [f"{r.method} {r.path}" for r in emulator.requests]

    if result.states.get(("cancel_order", -1)) != "success":
        print(result.output[-5000:], file=sys.stderr)
        print(f"Demo failed: task states {result.states}", file=sys.stderr)
        return 1
    order = result.xcom[("cancel_order", -1)]
    print("4/4 The emulator received:", *requests_seen, sep="\n      ")
    print("\nXCom return_value of task cancel_order (the canceled order):")
    for key in ("orderID", "orderStatus", "orderState", "orderType", "orderCurrency", "total", "orderDate"):
        print(f"  {key:<14} {order.get(key)}")
    print(f"  items          {[(i['orderItemID'], i['itemState']) for i in order.get('items', [])]}")
    print(f"  ({len(order)} fields in all; every field Kibo returned is kept)")
    print(f"\nDownstream task 'confirm' returned: {result.xcom[('confirm', -1)]!r}")
    print(f"Demo finished in {time.monotonic() - started:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
