"""``kibo-emulator --port 8080``: run the local Kibo emulator until interrupted."""

from __future__ import annotations

import argparse
import contextlib
import sys

from airflow_provider_kibo_cancel.emulator.server import KiboEmulator


def _id_range(text: str) -> range:
    first, _, last = text.partition("-")
    return range(int(first), int(last or first) + 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kibo-emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--tenant", action="append", help="tenant id accepted (repeatable; default 30294)")
    parser.add_argument("--client-id", default="demo-app-key", help="application key accepted")
    parser.add_argument("--client-secret", default="demo-shared-secret", help="shared secret accepted")
    parser.add_argument(
        "--open",
        type=_id_range,
        default=_id_range("1000-1999"),
        metavar="FIRST-LAST",
        help="open orders (default 1000-1999)",
    )
    parser.add_argument(
        "--canceled",
        type=_id_range,
        default=_id_range("2000-2099"),
        metavar="FIRST-LAST",
        help="orders canceled already (default 2000-2099)",
    )
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every request")
    parser.add_argument("--token-ttl", type=float, default=3600.0, help="access token lifetime, seconds")
    args = parser.parse_args(argv)

    emulator = KiboEmulator(
        tenants=tuple(args.tenant or ["30294"]),
        clients={args.client_id: args.client_secret},
        token_ttl=args.token_ttl,
        latency=args.latency,
    )
    emulator.add_orders(args.open)
    emulator.add_orders(args.canceled, status="CANCELED")
    print(
        f"Kibo emulator on http://{args.host}:{args.port} (tenants {sorted(emulator.tenants)}; "
        f"open orders {args.open.start}-{args.open.stop - 1}; "
        f"canceled {args.canceled.start}-{args.canceled.stop - 1})",
        flush=True,
    )
    with contextlib.suppress(KeyboardInterrupt):
        emulator.serve_forever(args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
