"""``kibo-emulator``: run the local Kibo emulator until interrupted (Ctrl-C).

It prints, once it listens, the URL, the tenant and the credentials to put in a ``kibo`` connection, with
the ``airflow connections add`` command and the ``AIRFLOW_CONN_KIBO_DEFAULT`` value that reach it.
"""

from __future__ import annotations

import argparse
import errno
import json
import shlex
import signal
import sys
import threading

from airflow_provider_kibo_cancel.emulator.server import DEFAULT_PORT, KiboEmulator

DEFAULT_TENANT = "30294"
DEFAULT_CLIENT_ID = "demo-app-key"
DEFAULT_CLIENT_SECRET = "demo-shared-secret"


def _id_range(text: str) -> range:
    first, _, last = text.partition("-")
    try:
        ids = range(int(first), int(last or first) + 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected FIRST-LAST (e.g. 1000-1999), got {text!r}") from None
    if not ids or ids.start < 1:
        raise argparse.ArgumentTypeError(f"expected 1 <= FIRST <= LAST, got {text!r}")
    return ids


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0..65535, got {text!r}")
    return port


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every default in --help, except "None" where the help text says it in words."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default is None else super()._get_help_string(action)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kibo-emulator",
        description=(
            "Run the local Kibo emulator (OAuth, Cancel Order, Get Order) until Ctrl-C. Once it listens, "
            "it prints its URL, the tenant and the credentials, with the `airflow connections add` "
            "command and the AIRFLOW_CONN_KIBO_DEFAULT value that point Airflow at it."
        ),
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        help="port to listen on; 0 picks a free one (8080 is left to Airflow's API server)",
    )
    parser.add_argument(
        "--tenant",
        action="append",
        metavar="TENANT_ID",
        help=f"tenant id accepted, repeatable (default: {DEFAULT_TENANT})",
    )
    parser.add_argument("--client-id", default=DEFAULT_CLIENT_ID, help="application key accepted")
    parser.add_argument("--client-secret", default=DEFAULT_CLIENT_SECRET, help="shared secret accepted")
    parser.add_argument(
        "--open",
        type=_id_range,
        default="1000-1999",
        metavar="FIRST-LAST",
        help="ids of the open orders",
    )
    parser.add_argument(
        "--canceled",
        type=_id_range,
        default="2000-2099",
        metavar="FIRST-LAST",
        help="ids of the orders canceled already",
    )
    parser.add_argument(
        "--latency", type=float, default=0.0, metavar="SECONDS", help="delay added to every request"
    )
    parser.add_argument(
        "--token-ttl", type=float, default=3600.0, metavar="SECONDS", help="access token lifetime"
    )
    parser.add_argument(
        "--tenant-limit",
        type=float,
        default=None,
        metavar="REQUESTS_PER_SECOND",
        help="tenant-wide limit: calls per second across all clients beyond which Kibo answers 429 "
        "(default: no limit)",
    )
    parser.add_argument(
        "--tenant-retry-after",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="Retry-After of the tenant limit's 429; the tenant stays blocked that long",
    )
    return parser


def connection_help(url: str, tenant: str, client_id: str, client_secret: str) -> str:
    """The lines telling a user how to point Airflow's ``kibo_default`` connection at the emulator."""
    extra = {"tenant_id": tenant, "environment": "sandbox"}
    command = [
        "airflow",
        "connections",
        "add",
        "kibo_default",
        "--conn-type",
        "kibo",
        "--conn-host",
        url,
        "--conn-login",
        client_id,
        "--conn-password",
        client_secret,
        "--conn-extra",
        json.dumps(extra),
    ]
    as_json = {
        "conn_type": "kibo",
        "host": url,
        "login": client_id,
        "password": client_secret,
        "extra": extra,
    }
    return "\n".join(
        [
            f"  tenant {tenant}, application key {client_id}, shared secret {client_secret}",
            "Add the connection with:",
            "  " + shlex.join(command),
            "or set it for Airflow processes started from this shell:",
            "  export AIRFLOW_CONN_KIBO_DEFAULT=" + shlex.quote(json.dumps(as_json)),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # Ctrl-C stops it even when whatever started it ignores SIGINT (a shell's background job, a test
    # runner's worker): a child inherits an ignored SIGINT.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    tenants = tuple(args.tenant or [DEFAULT_TENANT])
    emulator = KiboEmulator(
        tenants=tenants,
        clients={args.client_id: args.client_secret},
        token_ttl=args.token_ttl,
        latency=args.latency,
        tenant_requests_per_second=args.tenant_limit,
        tenant_retry_after=args.tenant_retry_after,
    )
    emulator.add_orders(args.open)
    emulator.add_orders(args.canceled, status="CANCELED")
    try:
        emulator.start(args.host, args.port)  # binds here: nothing is printed unless it worked
    except OSError as exc:
        reason = "the port is in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
        print(
            f"kibo-emulator: cannot listen on {args.host}:{args.port}: {reason}. "
            "Stop what uses it or choose another --port (--port 0 picks a free one).",
            file=sys.stderr,
        )
        return 1
    port = emulator.url.rsplit(":", 1)[1]
    # A wildcard address is not one to connect to; loopback reaches it from this machine.
    connect_host = "127.0.0.1" if args.host in ("", "0.0.0.0") else args.host
    url = f"http://{connect_host}:{port}"
    try:  # entered before printing: a Ctrl-C right after the start-up lines still stops it cleanly
        print(
            f"Kibo emulator on {url} (open orders {args.open.start}-{args.open.stop - 1}, canceled already "
            f"{args.canceled.start}-{args.canceled.stop - 1}; Ctrl-C stops it)\n"
            + connection_help(url, tenants[0], args.client_id, args.client_secret),
            flush=True,
        )
        threading.Event().wait()  # the server runs in its own thread until Ctrl-C
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
