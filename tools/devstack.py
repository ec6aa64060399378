"""The embedded stack: broker, Redis, SQLite and the four services on one machine.

``make run`` calls ``python -m tools.devstack``. The test harness and the
benchmarks use :class:`Stack` directly, on free ports.

Setting ``KAFKA_BOOTSTRAP_SERVERS``, ``REDIS_URL`` or ``DATABASE_URL`` points the
services at external servers instead of starting the embedded ones.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from shared.auth import Role, mint_token
from shared.kafka import ensure_topics
from tools.embedded import (
    Component,
    ComponentError,
    die_with_parent,
    free_port,
    start_broker,
    start_redis,
)

log = logging.getLogger("devstack")

ROOT = Path(__file__).resolve().parent.parent
RUN_DIR = ROOT / ".run"
STATE_FILE = "stack.json"
STOP_TIMEOUT_S = 10.0


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
            # Append-only: a Redis restart (a crash, or the next `make run`) keeps its data.
            redis = start_redis(self.redis_port, workdir=self.run_dir / "redis", appendonly=True)
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
        service_log = (log_dir / f"{spec.name}.log").open("ab")
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
            stdout=service_log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            # Dies with the stack's process even if that is SIGKILLed.
            preexec_fn=die_with_parent,
        )
        service_log.close()

    def stop_service(self, name: str, *, kill: bool = False) -> None:
        """Stop one service (SIGTERM, or SIGKILL to simulate a crash); a service still
        running ``STOP_TIMEOUT_S`` after SIGTERM is killed."""
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)

    @contextlib.contextmanager
    def services_paused(self) -> Iterator[None]:
        """Hold every running service still (SIGSTOP) until the block ends (SIGCONT)."""
        paused = [process for process in self.processes.values() if process.poll() is None]
        for process in paused:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            for process in paused:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGCONT)

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
        """Stop the services (all at once, each killed if still running ``STOP_TIMEOUT_S``
        after SIGTERM), then the infrastructure."""
        processes = [p for p in self.processes.values() if p.poll() is None]
        self.processes.clear()
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in processes:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)
        for component in reversed(self.components):
            component.stop()
        self.components.clear()

    def write_state(self, **extra: object) -> Path:
        """Write where everything listens to ``run_dir/stack.json`` (for ``tools.dlq``)."""
        path = self.run_dir / STATE_FILE
        state = {
            "broker": self.kafka_bootstrap_servers,
            "redis": self.redis_url,
            "services": {s.name: self.url(s.name) for s in self.services},
            "pid": os.getpid(),
            **extra,
        }
        path.write_text(json.dumps(state, indent=2))
        return path


@dataclass
class RestartPolicy:
    """Like compose's ``restart: always``: exponential backoff, reset after a healthy spell."""

    initial_s: float = 1.0
    max_s: float = 30.0
    healthy_after_s: float = 60.0
    crash_loop_restarts: int = 5
    crash_loop_window_s: float = 60.0


@dataclass
class _Tracked:
    """What the supervisor knows about one component."""

    started_at: float
    delay_s: float
    restart_at: float | None = None
    restarts: int = 0
    recent: collections.deque[float] = field(default_factory=collections.deque)
    in_crash_loop: bool = False


class SupervisorMetrics:
    """``devstack_*`` metrics, served by the supervisor itself."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.restarts = Counter(
            "devstack_restarts_total",
            "Times the supervisor restarted a component after it exited.",
            ["component"],
            registry=self.registry,
        )
        self.crash_loops = Counter(
            "devstack_crash_loops_total",
            "Times a component entered a crash loop (too many restarts in a minute).",
            ["component"],
            registry=self.registry,
        )
        self.up = Gauge(
            "devstack_component_up",
            "1 while the component's process runs, 0 while it waits to be restarted.",
            ["component"],
            registry=self.registry,
        )


@dataclass
class Supervisor:
    """Keeps the embedded stack running: a service, the broker or Redis that exits is
    started again after a backoff while everything else keeps running.

    ``on_broker_restart`` callbacks run after a restarted broker has its topics again
    (the embedded broker keeps them in memory only): the place to republish outboxes.
    """

    stack: Stack
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    metrics: SupervisorMetrics = field(default_factory=SupervisorMetrics)
    on_broker_restart: list[Callable[[], None]] = field(default_factory=list)
    clock: Callable[[], float] = time.monotonic
    broker_restarts: int = 0
    _tracked: dict[str, _Tracked] = field(default_factory=dict)

    def names(self) -> list[str]:
        """Every supervised component: broker and Redis (if embedded), then the services."""
        return [c.name for c in self.stack.components] + [s.name for s in self.stack.services]

    def _exit_code(self, name: str) -> int | None:
        component = next((c for c in self.stack.components if c.name == name), None)
        process = component.process if component else self.stack.processes.get(name)
        return None if process is None else process.poll()

    def check(self) -> None:
        """Notice exits, and restart what is due. Call it every half second or so."""
        now = self.clock()
        for name in self.names():
            tracked = self._tracked.setdefault(
                name, _Tracked(started_at=now, delay_s=self.policy.initial_s)
            )
            code = self._exit_code(name)
            if code is None:
                self.metrics.up.labels(name).set(1)
                if now - tracked.started_at >= self.policy.healthy_after_s:
                    tracked.delay_s = self.policy.initial_s
                    tracked.in_crash_loop = False
                continue
            self.metrics.up.labels(name).set(0)
            if tracked.restart_at is None:
                tracked.restart_at = now + tracked.delay_s
                log.warning(
                    "%s exited with code %s; restarting in %.0fs", name, code, tracked.delay_s
                )
            if now >= tracked.restart_at:
                self._restart(name, tracked, now)

    def _restart(self, name: str, tracked: _Tracked, now: float) -> None:
        tracked.restart_at = None
        tracked.delay_s = min(tracked.delay_s * 2, self.policy.max_s)
        try:
            if name == "broker":
                broker = next(c for c in self.stack.components if c.name == name)
                # The embedded broker creates a topic in two steps: the topic, then each
                # partition's offsets set back to 0. A produce that lands between them keeps
                # its batch, and later ones are numbered from 0 again, inside its range: a
                # consumer that has read the first batch never sees them. So the services
                # are held still until the topics exist (Kafka keeps its topics).
                with self.stack.services_paused():
                    broker.respawn()
                    asyncio.run(ensure_topics(broker.url))
            elif name == "redis":
                next(c for c in self.stack.components if c.name == name).respawn()
            else:
                self.stack.start_service(next(s for s in self.stack.services if s.name == name))
        except (ComponentError, OSError, RuntimeError) as exc:
            log.error("restarting %s failed: %s", name, exc)
        tracked.started_at = self.clock()
        tracked.restarts += 1
        self.metrics.restarts.labels(name).inc()
        tracked.recent.append(now)
        while tracked.recent and now - tracked.recent[0] > self.policy.crash_loop_window_s:
            tracked.recent.popleft()
        log.warning("restarted %s (restart %d)", name, tracked.restarts)
        if len(tracked.recent) >= self.policy.crash_loop_restarts and not tracked.in_crash_loop:
            tracked.in_crash_loop = True
            self.metrics.crash_loops.labels(name).inc()
            log.error(
                "CRASH LOOP: %s restarted %d times in %.0fs; still retrying every %.0fs. "
                "See its log in %s",
                name,
                len(tracked.recent),
                self.policy.crash_loop_window_s,
                tracked.delay_s,
                self.stack.run_dir / "logs",
            )
        if name == "broker":
            self.broker_restarts += 1
            log.warning("the broker restarted empty; its topics were created again")
            for callback in self.on_broker_restart:
                callback()
        print(self.status_line(), flush=True)

    def status_line(self) -> str:
        """One line: each component up or down, with its restart count."""
        parts = []
        for name in self.names():
            tracked = self._tracked.get(name)
            state = "up" if self._exit_code(name) is None else "DOWN"
            restarts = tracked.restarts if tracked else 0
            loop = " CRASH-LOOP" if tracked and tracked.in_crash_loop else ""
            parts.append(f"{name} {state}" + (f" ({restarts} restarts{loop})" if restarts else ""))
        return "status: " + ", ".join(parts)


def _print_banner(stack: Stack, metrics_port: int) -> None:
    print("\nQuick-response dispatch is running.\n")
    for spec in stack.services:
        print(f"  {spec.name:<18} {stack.url(spec.name)}   (docs: {stack.url(spec.name)}/docs)")
    print(f"\n  console            {stack.url('dispatch')}/console")
    print(f"  citizen app        {stack.url('intake')}/app/")
    print(f"  responder app      {stack.url('volunteer-locator')}/responder/   (pairing code: POST")
    print(f"                     {stack.url('volunteer-locator')}/v1/responders/<id>/pairing)")
    print(f"  broker             {stack.kafka_bootstrap_servers}")
    print(f"  redis              {stack.redis_url}")
    print(f"  supervisor         http://127.0.0.1:{metrics_port}/metrics   (restarts)")
    print("\nDev tokens (12 h):")
    for role in (Role.DISPATCHER, Role.OPERATOR, Role.SERVICE):
        print(f"  {role.value:<11} {stack.token(role)}")
    print("  (reporter tokens come back from POST /v1/reports; responder tokens from")
    print("   POST /v1/responders, or `make token ROLE=responder SUB=<responder id>`)")
    print("\nTry:")
    print(
        f"  curl -s -XPOST {stack.url('intake')}/v1/reports -H 'content-type: application/json' "
        '-d \'{"category":"theft","location":{"lat":23.02,"lon":113.75}}\''
    )
    print(
        f"  curl -s {stack.url('dispatch')}/v1/incidents?status=open "
        f"-H 'authorization: Bearer {stack.token(Role.DISPATCHER)}'"
    )
    print(
        "\nA service, the broker or Redis that exits is restarted (backoff 1 s to 30 s)."
        f"\nLogs in {stack.run_dir / 'logs'}. Ctrl-C stops everything.\n",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the embedded stack in the foreground, restarting what exits, until Ctrl-C."""
    parser = argparse.ArgumentParser(description="Run the whole system on this machine.")
    parser.add_argument("--run-dir", type=Path, default=RUN_DIR)
    parser.add_argument("--timeout", type=float, default=60)
    parser.add_argument(
        "--free-ports", action="store_true", help="listen on free ports instead of 8001-8004"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="devstack %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    if args.free_ports:
        stack = Stack.on_free_ports(args.run_dir)
        metrics_port = free_port()
    else:
        stack = Stack(
            run_dir=args.run_dir,
            kafka_bootstrap_servers=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"),
            redis_url=os.environ.get("REDIS_URL"),
            database_url=os.environ.get("DATABASE_URL"),
            broker_port=int(os.environ.get("EMBEDDED_KAFKA_PORT", "9092")),
            redis_port=int(os.environ.get("EMBEDDED_REDIS_PORT", "6379")),
        )
        metrics_port = int(os.environ.get("DEVSTACK_METRICS_PORT", "8009"))
    supervisor = Supervisor(stack)

    def _stop(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    # SIGINT too: a process started in the background by a shell without job control
    # (a script's `cmd &`, some CI runners) inherits SIGINT ignored, and Ctrl-C or the
    # e2e test's SIGINT would never reach us.
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGHUP, _stop)
    started = time.monotonic()
    state: Path | None = None
    try:
        stack.start(timeout=args.timeout)
        start_http_server(metrics_port, addr="127.0.0.1", registry=supervisor.metrics.registry)
        state = stack.write_state(metrics_port=metrics_port)
        print(f"All four services ready in {time.monotonic() - started:.1f}s.")
        _print_banner(stack, metrics_port)
        parent = os.getppid()
        while True:
            if os.getppid() != parent:
                # Whoever started us (make, a shell) is gone: nobody is left to press Ctrl-C.
                print("Parent process exited; stopping.", file=sys.stderr)
                return 0
            supervisor.check()
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\nStopping…", flush=True)
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()
        if state is not None:
            state.unlink(missing_ok=True)
        print("Everything stopped.", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
