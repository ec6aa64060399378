"""The embedded stack: broker, Redis, SQLite and the four services on one machine.

``make run`` calls ``python -m tools.devstack``. The test harness and the
benchmarks use :class:`Stack` directly, on free ports.

Setting ``KAFKA_BOOTSTRAP_SERVERS``, ``REDIS_URL`` or ``DATABASE_URL`` points the
services at external servers instead of starting the embedded ones.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from shared.auth import Role, mint_token
from shared.kafka import ensure_topics
from tools.embedded import Component, free_port, start_broker, start_redis

ROOT = Path(__file__).resolve().parent.parent
RUN_DIR = ROOT / ".run"


@dataclass(frozen=True)
class ServiceSpec:
    """How to start one service."""

    name: str
    module: str
    port: int


DEFAULT_SERVICES = (
    ServiceSpec("intake", "services.intake.app", 8001),
    ServiceSpec("dispatch", "services.dispatch.app", 8002),
    ServiceSpec("volunteer-locator", "services.volunteer_locator.app", 8003),
    ServiceSpec("notification", "services.notification.app", 8004),
)


def load_or_create_secret(run_dir: Path) -> str:
    """The dev signing secret: ``AUTH_SECRET`` if set, else one generated once per checkout."""
    if os.environ.get("AUTH_SECRET"):
        return os.environ["AUTH_SECRET"]
    path = run_dir / "auth_secret"
    if path.exists():
        return path.read_text().strip()
    run_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(32)
    path.write_text(secret)
    path.chmod(0o600)
    return secret


@dataclass
class Stack:
    """The whole system as child processes. Stopping it stops every process it started."""

    run_dir: Path
    services: tuple[ServiceSpec, ...] = DEFAULT_SERVICES
    kafka_bootstrap_servers: str | None = None
    redis_url: str | None = None
    database_url: str | None = None
    broker_port: int = 9092
    redis_port: int = 6379
    extra_env: Mapping[str, str] = field(default_factory=dict)
    service_env: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    components: list[Component] = field(default_factory=list)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    secret: str = ""

    @classmethod
    def on_free_ports(cls, run_dir: Path, **kwargs: object) -> Stack:
        """A stack whose broker, Redis and services all listen on free ports (for tests)."""
        services = tuple(ServiceSpec(s.name, s.module, free_port()) for s in DEFAULT_SERVICES)
        return cls(
            run_dir=run_dir,
            services=services,
            broker_port=free_port(),
            redis_port=free_port(),
            **kwargs,  # type: ignore[arg-type]
        )

    def url(self, service: str) -> str:
        """The base URL of ``service``."""
        spec = next(s for s in self.services if s.name == service)
        return f"http://127.0.0.1:{spec.port}"

    def token(self, role: Role | str, subject: str | None = None) -> str:
        """A signed token for this stack."""
        return mint_token(secret=self.secret, role=role, subject=subject or f"dev-{role}")

    def start_infrastructure(self) -> None:
        """Start the embedded broker and Redis unless external ones are configured."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.secret = self.secret or load_or_create_secret(self.run_dir)
        if not self.kafka_bootstrap_servers:
            broker = start_broker(self.broker_port, log_dir=self.run_dir / "logs")
            self.components.append(broker)
            self.kafka_bootstrap_servers = broker.url
        if not self.redis_url:
            redis = start_redis(self.redis_port, workdir=self.run_dir / "redis")
            self.components.append(redis)
            self.redis_url = redis.url
        asyncio.run(ensure_topics(self.kafka_bootstrap_servers))

    def service_environment(self, spec: ServiceSpec) -> dict[str, str]:
        """The environment one service process runs with."""
        env = dict(os.environ)
        env.update(
            {
                "PYTHONPATH": str(ROOT),
                "SERVICE_NAME": spec.name,
                "PORT": str(spec.port),
                "AUTH_SECRET": self.secret,
                "KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap_servers or "",
                "REDIS_URL": self.redis_url or "",
                "DATABASE_URL": self.database_url
                or f"sqlite+aiosqlite:///{self.run_dir / (spec.name + '.db')}",
                "LOCATOR_URL": self.url("volunteer-locator"),
                "INTAKE_URL": self.url("intake"),
                "DISPATCH_URL": self.url("dispatch"),
                "NOTIFICATION_URL": self.url("notification"),
                "DISPATCH_PUBLIC_URL": self.url("dispatch"),
            }
        )
        if any(c.name == "broker" for c in self.components):
            # The embedded broker delays a consumer's first join by half the session timeout.
            env.setdefault("KAFKA_SESSION_TIMEOUT_MS", "4000")
            env.setdefault("KAFKA_HEARTBEAT_INTERVAL_MS", "500")
        env.update(self.extra_env)
        env.update(self.service_env.get(spec.name, {}))
        return env

    def start_service(self, spec: ServiceSpec) -> None:
        """Start one service under uvicorn."""
        log_dir = self.run_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        log = (log_dir / f"{spec.name}.log").open("ab")
        self.processes[spec.name] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                f"{spec.module}:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(spec.port),
                "--no-access-log",
                "--timeout-graceful-shutdown",
                "5",
            ],
            cwd=ROOT,
            env=self.service_environment(spec),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()

    def stop_service(self, name: str, *, kill: bool = False) -> None:
        """Stop one service (SIGTERM, or SIGKILL to simulate a crash)."""
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)

    def restart_service(self, name: str, *, kill: bool = False) -> None:
        """Stop and start one service again."""
        self.stop_service(name, kill=kill)
        self.start_service(next(s for s in self.services if s.name == name))

    def start(self, *, timeout: float = 60) -> None:
        """Start everything and wait until every service is ready."""
        self.start_infrastructure()
        for spec in self.services:
            self.start_service(spec)
        self.wait_ready(timeout=timeout)

    def wait_ready(self, *, timeout: float = 60, names: list[str] | None = None) -> None:
        """Wait until each named service's ``/readyz`` answers 200."""
        deadline = time.monotonic() + timeout
        pending = {s.name for s in self.services} if names is None else set(names)
        with httpx.Client(timeout=2) as client:
            while pending:
                for name in sorted(pending):
                    process = self.processes.get(name)
                    if process is not None and process.poll() is not None:
                        raise RuntimeError(
                            f"{name} exited with {process.returncode}; "
                            f"see {self.run_dir / 'logs' / (name + '.log')}"
                        )
                    with contextlib.suppress(httpx.HTTPError):
                        if client.get(f"{self.url(name)}/readyz").status_code == 200:
                            pending.discard(name)
                if pending and time.monotonic() > deadline:
                    raise TimeoutError(f"not ready within {timeout}s: {sorted(pending)}")
                if pending:
                    time.sleep(0.1)

    def stop(self) -> None:
        """Stop the services, then the infrastructure."""
        for name in list(self.processes):
            self.stop_service(name)
        for component in reversed(self.components):
            component.stop()
        self.components.clear()


def _print_banner(stack: Stack) -> None:
    print("\nQuick-response dispatch is running.\n")
    for spec in stack.services:
        print(f"  {spec.name:<18} {stack.url(spec.name)}   (docs: {stack.url(spec.name)}/docs)")
    print(f"\n  console            {stack.url('dispatch')}/console")
    print(f"  citizen app        {stack.url('intake')}/app/")
    print(f"  responder app      {stack.url('volunteer-locator')}/responder/   (pairing code: POST")
    print(f"                     {stack.url('volunteer-locator')}/v1/responders/<id>/pairing)")
    print(f"  broker             {stack.kafka_bootstrap_servers}")
    print(f"  redis              {stack.redis_url}")
    print("\nDev tokens (12 h):")
    for role in (Role.DISPATCHER, Role.OPERATOR, Role.SERVICE):
        print(f"  {role.value:<11} {stack.token(role)}")
    print("  (reporter tokens come back from POST /v1/reports; responder tokens from")
    print("   POST /v1/responders, or `make token ROLE=responder SUB=<responder id>`)")
    print("\nTry:")
    print(
        f"  curl -s -XPOST {stack.url('intake')}/v1/reports -H 'content-type: application/json' "
        '-d \'{"category":"theft","location":{"lat":22.5431,"lon":114.0579}}\''
    )
    print(
        f"  curl -s {stack.url('dispatch')}/v1/incidents?status=open "
        f"-H 'authorization: Bearer {stack.token(Role.DISPATCHER)}'"
    )
    print(f"\nLogs in {stack.run_dir / 'logs'}. Ctrl-C stops everything.\n", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the embedded stack in the foreground until Ctrl-C."""
    parser = argparse.ArgumentParser(description="Run the whole system on this machine.")
    parser.add_argument("--run-dir", type=Path, default=RUN_DIR)
    parser.add_argument("--timeout", type=float, default=60)
    parser.add_argument(
        "--free-ports", action="store_true", help="listen on free ports instead of 8001-8004"
    )
    args = parser.parse_args(argv)

    if args.free_ports:
        stack = Stack.on_free_ports(args.run_dir)
    else:
        stack = Stack(
            run_dir=args.run_dir,
            kafka_bootstrap_servers=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"),
            redis_url=os.environ.get("REDIS_URL"),
            database_url=os.environ.get("DATABASE_URL"),
            broker_port=int(os.environ.get("EMBEDDED_KAFKA_PORT", "9092")),
            redis_port=int(os.environ.get("EMBEDDED_REDIS_PORT", "6379")),
        )
    stopping = False

    def _stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGHUP, _stop)
    started = time.monotonic()
    try:
        stack.start(timeout=args.timeout)
        print(f"All four services ready in {time.monotonic() - started:.1f}s.")
        _print_banner(stack)
        parent = os.getppid()
        while True:
            if os.getppid() != parent:
                # Whoever started us (make, a shell) is gone: nobody is left to press Ctrl-C.
                print("Parent process exited; stopping.", file=sys.stderr)
                return 0
            for name, process in stack.processes.items():
                if process.poll() is not None:
                    print(f"{name} exited with {process.returncode}; stopping.", file=sys.stderr)
                    return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\nStopping…", flush=True)
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stack.stop()
        print("Everything stopped.", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
