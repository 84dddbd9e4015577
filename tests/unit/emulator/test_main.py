"""`kibo-emulator`, the console script, as a user starts it: its help, its start-up lines, a taken port."""

from __future__ import annotations

import json
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from airflow_provider_kibo_cancel.emulator.__main__ import connection_help
from airflow_provider_kibo_cancel.emulator.server import DEFAULT_PORT
from airflow_provider_kibo_cancel.hooks.kibo import KiboHook
from tests.integration.test_readme import snippet

KIBO_EMULATOR = str(Path(sys.executable).with_name("kibo-emulator"))


@contextmanager
def running(*args: str) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    """The console script with these arguments; yields it and its first start-up lines; always stopped."""
    proc = subprocess.Popen([KIBO_EMULATOR, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(6)]
        assert all(lines), (
            f"start-up lines missing: {lines!r}; stderr: {proc.stderr.read() if proc.stderr else ''}"
        )
        yield proc, [line.rstrip("\n") for line in lines]
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(timeout=10)


def test_the_default_port_leaves_8080_to_airflow() -> None:
    assert DEFAULT_PORT == 8090


def test_help_shows_every_default() -> None:
    result = subprocess.run([KIBO_EMULATOR, "--help"], capture_output=True, text=True, check=True)
    text = " ".join(result.stdout.split())
    for shown in (
        "--host HOST address to listen on (default: 127.0.0.1)",
        "0 picks a free one",
        "(default: 8090)",
        "--tenant TENANT_ID tenant id accepted, repeatable (default: 30294)",
        "application key accepted (default: demo-app-key)",
        "shared secret accepted (default: demo-shared-secret)",
        "ids of the open orders (default: 1000-1999)",
        "ids of the orders canceled already (default: 2000-2099)",
        "delay added to every request (default: 0.0)",
        "access token lifetime (default: 3600.0)",
    ):
        assert shown in text, text
    assert "None" not in text


def test_start_up_lines_say_how_to_connect_and_they_work(monkeypatch: pytest.MonkeyPatch) -> None:
    with running("--port", "0", "--tenant", "41234", "--client-secret", "another-secret") as (proc, lines):
        first, credentials, _, command, _, export = lines
        assert first.startswith("Kibo emulator on http://127.0.0.1:")
        url = first.split()[3]
        port = int(url.rsplit(":", 1)[1])
        assert port not in (0, DEFAULT_PORT)
        assert "open orders 1000-1999, canceled already 2000-2099; Ctrl-C stops it" in first
        assert (
            credentials.strip() == "tenant 41234, application key demo-app-key, shared secret another-secret"
        )
        assert shlex.split(command) == [
            "airflow",
            "connections",
            "add",
            "kibo_default",
            "--conn-type",
            "kibo",
            "--conn-host",
            url,
            "--conn-login",
            "demo-app-key",
            "--conn-password",
            "another-secret",
            "--conn-extra",
            '{"tenant_id": "41234", "environment": "sandbox"}',
        ]
        # The printed AIRFLOW_CONN_KIBO_DEFAULT, exactly as a shell would set it, reaches the emulator.
        name, _, value = shlex.split(export.strip().removeprefix("export "))[0].partition("=")
        assert name == "AIRFLOW_CONN_KIBO_DEFAULT"
        monkeypatch.setenv(name, value)
        assert json.loads(value)["host"] == url
        hook = KiboHook()
        assert hook.test_connection()[0] is True
        assert hook.cancel_order(1500, "created_by_mistake")["orderStatus"] == "CANCELED"
        assert hook.get_order(2050)["orderStatus"] == "CANCELED"
        assert proc.poll() is None


def test_ctrl_c_stops_it_quietly() -> None:
    with running("--port", "0") as (proc, _):
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
        assert proc.stderr is not None
        assert proc.stderr.read() == ""


def test_a_taken_port_is_one_clean_line_and_nothing_else() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        result = subprocess.run(
            [KIBO_EMULATOR, "--port", str(port)], capture_output=True, text=True, timeout=30, check=False
        )
    assert result.returncode == 1
    assert result.stdout == ""  # no "Kibo emulator on ..." before the bind failed
    assert result.stderr == (
        f"kibo-emulator: cannot listen on 127.0.0.1:{port}: the port is in use. "
        "Stop what uses it or choose another --port (--port 0 picks a free one).\n"
    )
    assert time.monotonic() - started < 20


def test_bad_arguments_are_named() -> None:
    result = subprocess.run(
        [KIBO_EMULATOR, "--port", "99999", "--open", "x-y"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert "expected a port number 0..65535, got '99999'" in result.stderr
    assert result.stdout == ""


def test_the_docs_show_what_the_emulator_prints_for_its_defaults() -> None:
    _, _, command, _, export = connection_help(
        f"http://127.0.0.1:{DEFAULT_PORT}", "30294", "demo-app-key", "demo-shared-secret"
    ).splitlines()
    assert snippet("emulator-connection").strip() == command.strip()  # README, quick start, connection page
    assert f"\n{export.strip()}\n" in "\n" + snippet("env-connection-emulator")
