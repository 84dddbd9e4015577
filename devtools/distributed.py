"""Production-shaped Airflow on one machine: PostgreSQL, Redis and CeleryExecutor, all on 127.0.0.1.

`DistributedStack` starts, each in a session (process group) of its own: PostgreSQL and Redis with
throw-away data directories, the Kibo emulator, and Airflow's scheduler, DAG processor, triggerer, API
server and two Celery workers. Each worker runs in its own UTS namespace with a host name of its own, as
two machines would, so task instances report distinct `hostname`s. Everything is stopped on exit, also
when starting fails halfway. Used by tests/integration/test_distributed.py (`make test-distributed`).
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import requests

from devtools.airflow_local import AirflowEnv, AirflowStack, free_port
from devtools.emulator_process import emulator_process

# Debian package -> a file it installs that this module runs.
SYSTEM_PACKAGES = {"postgresql": "/usr/lib/postgresql/*/bin/initdb", "redis-server": "/usr/bin/redis-server"}
WORKER_HOSTNAMES = ("kibo-worker-1", "kibo-worker-2")


def ensure_system_packages() -> float:
    """apt-get install what is missing (as CI runs: root); returns the seconds spent installing."""
    missing = [name for name, path in SYSTEM_PACKAGES.items() if not glob.glob(path)]
    if not missing:
        return 0.0
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise RuntimeError(f"{missing} missing and cannot be installed here (needs root and apt-get)")
    started = time.monotonic()
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env)
    return time.monotonic() - started


def _stop_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 20) -> None:
    """Signal a process's whole session (it was started with start_new_session), then make sure."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # leftovers whose parent already exited
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening on {port}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{what} not listening on 127.0.0.1:{port} after {timeout} s")


@contextmanager
def postgres_server(log_dir: Path) -> Iterator[str]:
    """A throw-away PostgreSQL cluster on 127.0.0.1; yields the SQLAlchemy URL of its `airflow` database.

    Root cannot run postgres: the cluster lives in a temp dir owned by the `postgres` user, which runs it.
    """
    (bin_dir,) = {str(Path(p).parent) for p in glob.glob(SYSTEM_PACKAGES["postgresql"])}
    root = Path(tempfile.mkdtemp(prefix="kibo-pg-"))
    password = secrets.token_urlsafe(16)
    proc: subprocess.Popen[bytes] | None = None
    try:
        shutil.chown(root, "postgres", "postgres")
        pwfile = root / "pw"
        pwfile.write_text(password)
        shutil.chown(pwfile, "postgres", "postgres")
        as_postgres = ["runuser", "-u", "postgres", "--"]
        subprocess.run(
            [
                *as_postgres,
                f"{bin_dir}/initdb",
                "-D",
                str(root / "data"),
                "-U",
                "airflow",
                "-E",
                "UTF8",
                "--auth=scram-sha-256",
                f"--pwfile={pwfile}",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
        )
        port = free_port()
        with (log_dir / "postgres.log").open("wb") as log:
            proc = subprocess.Popen(
                # fsync off: a throw-away cluster; the socket directory stays inside it.
                [
                    *as_postgres,
                    f"{bin_dir}/postgres",
                    "-D",
                    str(root / "data"),
                    "-p",
                    str(port),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    f"unix_socket_directories={root}",
                    "-c",
                    "fsync=off",
                    "-c",
                    "max_connections=200",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _wait_for_port(port, proc, "postgres")
        env = {**os.environ, "PGPASSWORD": password}
        for _ in range(50):  # listening comes a moment before accepting logins
            created = subprocess.run(
                [f"{bin_dir}/createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "airflow", "airflow"],
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            if created.returncode == 0:
                break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"createdb failed: {created.stderr}")
        yield f"postgresql+psycopg2://airflow:{password}@127.0.0.1:{port}/airflow"
    finally:
        if proc is not None:
            _stop_group(proc, signal.SIGINT)  # SIGINT: PostgreSQL's fast shutdown
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def redis_server(log_dir: Path, *, tls: tuple[Path, Path] | None = None) -> Iterator[str]:
    """Redis on 127.0.0.1 with no persistence; yields its URL. ``tls`` (certificate, key): TLS only,
    ``rediss://``, no client certificate asked for."""
    root = Path(tempfile.mkdtemp(prefix="kibo-redis-"))
    port = free_port()
    listen = ["--port", str(port)]
    if tls is not None:
        cert, key = tls
        listen = ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert)]
        listen += ["--tls-key-file", str(key), "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"]
    with (log_dir / "redis.log").open("wb") as log:
        proc = subprocess.Popen(
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                *listen,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(root),
                "--daemonize",
                "no",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_for_port(port, proc, "redis-server")
        yield f"{'rediss' if tls else 'redis'}://127.0.0.1:{port}/0"
    finally:
        _stop_group(proc)
        shutil.rmtree(root, ignore_errors=True)


class CeleryAirflowStack(AirflowStack):
    """AirflowStack's REST helpers over scheduler, DAG processor, triggerer, API server and Celery workers."""

    def __init__(self, env: AirflowEnv, *, worker_concurrency: int, extra_env: dict[str, str]) -> None:
        super().__init__(env, extra_env=extra_env)
        self.worker_concurrency = worker_concurrency

    def _commands(self) -> dict[str, list[str]]:
        airflow, home = self.airflow_env.airflow_bin, self.airflow_env.home
        # The log servers of workers and triggerer bind every interface and have no host option; the
        # logs are on this machine's disk, where the API server reads them, so they are not started.
        commands = {
            "api-server": [airflow, "api-server", "--host", "127.0.0.1", "--port", str(self.port)],
            "scheduler": [airflow, "scheduler", "--skip-serve-logs"],
            "dag-processor": [airflow, "dag-processor"],
            "triggerer": [airflow, "triggerer", "--skip-serve-logs"],
        }
        for number, hostname in enumerate(WORKER_HOSTNAMES, start=1):
            # A UTS namespace of its own: the worker and its tasks see their own host name.
            commands[f"worker{number}"] = [
                "unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', hostname,
                airflow, "celery", "worker", "--celery-hostname", f"worker{number}@{hostname}",
                "--concurrency", str(self.worker_concurrency), "--skip-serve-logs",
                "--pid", str(home / f"worker{number}.pid"), "--without-gossip", "--without-mingle",
            ]  # fmt: skip
        return commands

    def __enter__(self) -> CeleryAirflowStack:
        try:
            for name, command in self._commands().items():
                with (self.airflow_env.home / f"{name}.log").open("wb") as log:
                    self.process_names.append(name)
                    self.processes.append(
                        subprocess.Popen(
                            command,
                            env=self.env,
                            stdout=log,
                            stderr=subprocess.STDOUT,
                            start_new_session=True,
                        )
                    )
            self._wait_healthy()
            self._wait_workers_ready()
            token = self.session.get(f"{self.url}/auth/token", timeout=10).json()["access_token"]
            self.session.headers["Authorization"] = f"Bearer {token}"
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_workers_ready(self, timeout: float = 120) -> None:
        # Both must be consuming before a run starts, or the first worker up takes every task.
        deadline = time.monotonic() + timeout
        for number, hostname in enumerate(WORKER_HOSTNAMES, start=1):
            while f"worker{number}@{hostname} ready." not in self.logs(f"worker{number}", tail=100_000):
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"worker{number} not ready after {timeout} s:\n{self.logs(f'worker{number}')}"
                    )
                time.sleep(0.5)


@dataclass
class Listener:
    pid: int
    name: str
    address: str
    port: int


def listeners_of_children() -> list[Listener]:
    """Every TCP socket listened on by a descendant of this process (what the stack started)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            for conn in child.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    found.append(Listener(child.pid, child.name(), conn.laddr.ip, conn.laddr.port))
    return found


@dataclass
class DistributedStack:
    """Everything up: `airflow` (REST helpers), `emulator_url`, `database_url`, `broker_url`."""

    airflow: CeleryAirflowStack
    env: AirflowEnv
    emulator_url: str
    database_url: str
    broker_url: str
    apt_seconds: float
    start_seconds: float

    def emulator(self, method: str, name: str, body: Any = None) -> Any:
        """The emulator's control endpoints (`/_emulator/{name}`)."""
        response = requests.request(method, f"{self.emulator_url}/_emulator/{name}", json=body, timeout=30)
        response.raise_for_status()
        return response.json()


@contextmanager
def distributed_stack(
    home: Path,
    dags_folder: Path,
    *,
    emulator_args: tuple[str, ...] = (),
    worker_concurrency: int = 3,
    parallelism: int = 8,
    extra_config: dict[str, str] | None = None,
) -> Iterator[DistributedStack]:
    """Install what is missing, start every part on 127.0.0.1, yield, and stop them all."""
    started = time.monotonic()
    apt_seconds = ensure_system_packages()
    home.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        database_url = stack.enter_context(postgres_server(home))
        broker_url = stack.enter_context(redis_server(home))
        emulator_url = stack.enter_context(emulator_process(*emulator_args))
        env = AirflowEnv(home, dags_folder)
        config = {
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database_url,
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CELERY__BROKER_URL": broker_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{database_url}",
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(worker_concurrency),
            "AIRFLOW__CORE__PARALLELISM": str(parallelism),
            **(extra_config or {}),
        }
        env.env.update(config)
        env.migrate()
        airflow = stack.enter_context(
            CeleryAirflowStack(env, worker_concurrency=worker_concurrency, extra_env=config)
        )
        yield DistributedStack(
            airflow, env, emulator_url, database_url, broker_url, apt_seconds, time.monotonic() - started
        )
