"""One task in its own process for the tenant budget proofs: a KiboHook cancelling orders with a few
threads, as a bulk run or a mapped cancel would; prints what happened to each order as JSON.

``python -m tests.integration.budget_worker SPEC`` with SPEC a JSON object: ``orders``, ``threads``,
``start_at`` (epoch seconds: every worker starts sending together), ``max_sleep`` (optional). The
connections come from the environment (AIRFLOW_CONN_KIBO_DEFAULT, AIRFLOW_CONN_KIBO_REDIS).
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from airflow_provider_kibo_cancel.exceptions import KiboError
from airflow_provider_kibo_cancel.hooks.kibo import KiboHook


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])

    hook = KiboHook(max_sleep=spec.get("max_sleep"), pool_size=int(spec["threads"]))
    hook.settings  # noqa: B018 - read the connection before the start line, as a started task has
    time.sleep(max(0.0, float(spec["start_at"]) - time.time()))

    def cancel(order_id: int) -> tuple[int, str]:
        try:
            hook.cancel_order(order_id, "created_by_mistake")
            return order_id, "canceled"
        except KiboError as exc:
            return order_id, f"{type(exc).__name__}: {exc.message}"[:300]

    with ThreadPoolExecutor(int(spec["threads"])) as pool:
        outcomes = dict(pool.map(cancel, spec["orders"]))
    print(json.dumps({"outcomes": outcomes, "budget": hook._retry_limits.budget.describe()}))  # type: ignore[union-attr]
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
