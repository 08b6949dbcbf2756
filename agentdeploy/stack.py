"""The local stack: `agentdeploy up | down | status`.

One supervisor process starts the stack's services, waits until each answers its health URL,
restarts a crashed one with backoff, and stops them all on SIGTERM/SIGINT. The services are a
list of factories (`SERVICES`), so later parts add their own (e.g. a Prefect runner serving flow
deployments) by appending a factory here.

    up (foreground)   the calling process is the supervisor
    up --detach       a daemon (new session) is the supervisor; the caller waits until healthy
    down              SIGTERM to the supervisor, wait until it has stopped every child
    status            each service's URL and health, from the supervisor's state file

Files under `AGENTDEPLOY_HOME`:
    run/stack.lock    flock held by the running supervisor: the one truth of "is it up"
    run/stack.pid     the supervisor's pid
    run/stack.json    the supervisor's state: services, their pids and URLs (no secrets)
    logs/stack.log    the detached supervisor's output; logs/<service>.log for each child
    keys/*            the Prefect auth string, Prefect's and MLflow's encryption keys (0600)

Secrets reach children through their environment, never their argv (any local user can read
/proc/<pid>/cmdline).
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from agentdeploy.errors import Unavailable
from agentdeploy.settings import Settings, get_settings
from agentdeploy.workspace.keys import read_or_create

__all__ = [
    "Service",
    "ServiceFactory",
    "SERVICES",
    "services",
    "StackStatus",
    "ServiceStatus",
    "StackError",
    "prefect_auth_string",
    "prefect_encryption_key",
    "prefect_client_env",
    "configure_prefect",
    "configure_mlflow",
    "ensure_stack_keys",
    "is_running",
    "status",
    "up",
    "up_detached",
    "down",
    "Supervisor",
    "STACK_MARKER",
    "stack_processes",
    "SCHEDULED_DEPLOYMENTS",
    "ScheduledRun",
    "scheduled_runs",
    "count_rows",
    "FormattingLag",
    "formatting_lags",
]

# Client-side variables a child must not inherit (the server does not need a user's token).
_SCRUBBED_ENV = ("AGENTDEPLOY_TOKEN", "AGENTDEPLOY_HOST", "PREFECT_API_KEY")
# Set in every child's environment: finds what a killed supervisor left behind (`down`).
STACK_MARKER = "AGENTDEPLOY_STACK_HOME"
_STOP_GRACE_S = 15.0
_BACKOFF_MAX_S = 30.0
_STABLE_AFTER_S = 60.0  # a child up this long has its restart backoff reset


class StackError(Exception):
    """The stack could not be started or stopped; the message says why and what to do."""


# Secrets of the stack -----------------------------------------------------------------------


def prefect_auth_string(settings: Settings) -> str:
    """`agentdeploy:<random>`: the Prefect API's basic-auth string, created once (0600)."""
    value = read_or_create(
        settings.prefect_auth_string_path, lambda: f"agentdeploy:{secrets.token_urlsafe(32)}".encode()
    )
    return value.decode().strip()


def prefect_encryption_key(settings: Settings) -> str:
    """The Fernet key Prefect encrypts block data with, kept out of Prefect's database (0600)."""
    path = settings.prefect_encryption_key_path
    return read_or_create(path, lambda: base64.urlsafe_b64encode(os.urandom(32))).decode().strip()


def mlflow_kek_path(settings: Settings) -> Path:
    return settings.keys_dir / "mlflow-kek-passphrase"


def mlflow_kek_passphrase(settings: Settings) -> str:
    """MLflow encrypts its stored secrets under this passphrase (else under a public default)."""
    value = read_or_create(mlflow_kek_path(settings), lambda: secrets.token_urlsafe(32).encode())
    return value.decode().strip()


def ensure_stack_keys(settings: Settings) -> None:
    """Create the stack's key files (idempotent)."""
    prefect_auth_string(settings)
    prefect_encryption_key(settings)
    mlflow_kek_passphrase(settings)


# How clients reach the stack ----------------------------------------------------------------


def prefect_client_env(settings: Settings | None = None) -> dict[str, str]:
    """Environment for a Prefect client (CLI, SDK, flows, runner) of this stack.

    Raises `Unavailable` if the stack was never started (no auth string yet)."""
    settings = settings or get_settings()
    path = settings.prefect_auth_string_path
    try:
        auth = path.read_text().strip()
    except FileNotFoundError:
        raise Unavailable(
            f"The Prefect API auth string {path} does not exist yet: start the stack with 'agentdeploy up'."
        ) from None
    return {
        "PREFECT_API_URL": settings.prefect_api_url,
        "PREFECT_API_AUTH_STRING": auth,
        # The stack's own Prefect home: a user's ~/.prefect profile (maybe holding a Prefect
        # Cloud key) is neither read nor sent to this server.
        "PREFECT_HOME": str(settings.prefect_home),
    }


def configure_prefect(settings: Settings | None = None) -> None:
    """Point this process's Prefect client at the stack, unless the user set `PREFECT_API_URL`.

    Call before importing `prefect` (Prefect reads its settings at import)."""
    if os.environ.get("PREFECT_API_URL"):
        return
    os.environ.update(prefect_client_env(settings))


def configure_mlflow(settings: Settings | None = None) -> str:
    """Point MLflow (tracking and registry) at the stack's tracking server, unless the user set
    `MLFLOW_TRACKING_URI`. Returns the tracking URI in effect."""
    user_uri = os.environ.get("MLFLOW_TRACKING_URI")
    if user_uri:
        return user_uri
    uri = (settings or get_settings()).mlflow_tracking_uri
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.environ.setdefault("MLFLOW_REGISTRY_URI", uri)
    if "mlflow" in sys.modules:  # already imported: its module-level URIs may be cached
        import mlflow

        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(os.environ["MLFLOW_REGISTRY_URI"])
    return uri


# The services -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Service:
    """One supervised child: how to start it, where it answers, how to stop it."""

    name: str  # short id: the log file is logs/<name>.log
    title: str  # what users read
    argv: list[str]
    url: str  # what users open
    health_url: str  # answers < 400 when the service is ready
    port: int | None = None  # checked free before starting
    bind: str = "127.0.0.1"
    env: dict[str, str] = field(default_factory=dict, repr=False)  # added to the base env
    stop_signal: int = signal.SIGTERM  # SIGINT for children that ignore SIGTERM (prefect worker)
    requires: tuple[str, ...] = ()  # started once these services are healthy
    start_timeout_s: float = 240.0
    port_env: str = ""  # the variable that moves it to another port (named in errors)


ServiceFactory = Callable[[Settings], Service]


def _tool(name: str) -> str:
    """A console script of this venv (beside the interpreter), else from PATH."""
    beside = Path(sys.executable).with_name(name)
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if not found:
        raise StackError(f"'{name}' is not installed in this environment; run 'make install'.")
    return found


def prefect_server(settings: Settings) -> Service:
    port = settings.prefect_port
    env = {
        **prefect_client_env(settings),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_ENCRYPTION_KEY": prefect_encryption_key(settings),
        "PREFECT_SERVER_API_AUTH_STRING": prefect_auth_string(settings),
    }
    return Service(
        name="prefect",
        title="Prefect server",
        argv=[_tool("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        url=f"http://127.0.0.1:{port}",
        health_url=f"http://127.0.0.1:{port}/api/health",
        port=port,
        env=env,
        port_env="AGENTDEPLOY_PREFECT_PORT",
    )


# MLflow 3's server starts a job runner and seven Huey consumer processes by default (about 250 MB
# each, for GenAI evaluation jobs agentdeploy never submits): off, the server is one process.
MLFLOW_SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def mlflow_server(settings: Settings) -> Service:
    port = settings.mlflow_port
    store = settings.mlflow_dir
    return Service(
        name="mlflow",
        title="MLflow tracking server",
        argv=[
            _tool("mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
            "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
            # Artifacts are served by the tracking server: clients upload and download over HTTP.
            "--serve-artifacts", "--artifacts-destination", str(store / "artifacts"),
            "--allowed-hosts", f"127.0.0.1,127.0.0.1:{port},localhost,localhost:{port}",
            "--workers", "1",
        ],
        url=f"http://127.0.0.1:{port}",
        health_url=f"http://127.0.0.1:{port}/health",
        port=port,
        env={"MLFLOW_CRYPTO_KEK_PASSPHRASE": mlflow_kek_passphrase(settings), **MLFLOW_SERVER_ENV},
        port_env="AGENTDEPLOY_MLFLOW_PORT",
    )


def agentdeploy_server(settings: Settings) -> Service:
    argv = [
        sys.executable, "-m", "uvicorn", "agentdeploy.server:app",
        "--host", settings.bind, "--port", str(settings.port),
        "--log-level", "info", "--timeout-graceful-shutdown", "10",
    ]
    if settings.tls_certfile and settings.tls_keyfile:
        argv += ["--ssl-certfile", str(settings.tls_certfile), "--ssl-keyfile", str(settings.tls_keyfile)]
    env = {**prefect_client_env(settings)}
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        env["MLFLOW_TRACKING_URI"] = settings.mlflow_tracking_uri
    return Service(
        name="server",
        title="agentdeploy server",
        argv=argv,
        url=settings.server_url,
        health_url=f"{settings.server_url}/api/health",
        port=settings.port,
        bind=settings.bind,
        env=env,
        port_env="AGENTDEPLOY_PORT",
    )


def flow_runner(settings: Settings) -> Service:
    """Serves the flow deployments (deploy-agent and the scheduled flows) with a 1 s poll, so a
    deploy starts in about a second and schedules run with no other command."""
    port = settings.flow_runner_port
    env = {
        **prefect_client_env(settings),
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "PREFECT_RUNNER_SERVER_ENABLE": "true",
        "PREFECT_RUNNER_SERVER_HOST": "127.0.0.1",
        "PREFECT_RUNNER_SERVER_PORT": str(port),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        env["MLFLOW_TRACKING_URI"] = settings.mlflow_tracking_uri
    return Service(
        name="flows",
        title="Prefect flow runner (deploy-agent, scheduled flows)",
        argv=[sys.executable, "-m", "flows.serve"],
        url=f"{settings.prefect_api_url.removesuffix('/api')}/deployments",
        health_url=f"http://127.0.0.1:{port}/health",
        port=port,
        env=env,
        stop_signal=signal.SIGINT,  # Prefect runners ignore SIGTERM (FACTS.md)
        requires=("prefect", "mlflow", "server"),
        port_env="AGENTDEPLOY_RUNNER_PORT",
    )


# Append a factory here to supervise another service (started in this order).
SERVICES: list[ServiceFactory] = [prefect_server, mlflow_server, agentdeploy_server, flow_runner]


def services(settings: Settings) -> list[Service]:
    ensure_stack_keys(settings)
    return [factory(settings) for factory in SERVICES]


def base_env(settings: Settings) -> dict[str, str]:
    """The environment every child starts from: ours, minus client credentials, plus the
    settings the supervisor resolved (so every child agrees on home and ports)."""
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
    env.update(
        AGENTDEPLOY_HOME=str(settings.home_dir),
        AGENTDEPLOY_BIND=settings.bind,
        AGENTDEPLOY_PORT=str(settings.port),
        AGENTDEPLOY_PREFECT_PORT=str(settings.prefect_port),
        AGENTDEPLOY_MLFLOW_PORT=str(settings.mlflow_port),
        PYTHONUNBUFFERED="1",
    )
    env[STACK_MARKER] = str(settings.home_dir)
    return env


# Files of a running stack -------------------------------------------------------------------


def _lock_path(settings: Settings) -> Path:
    return settings.run_dir / "stack.lock"


def _pid_path(settings: Settings) -> Path:
    return settings.run_dir / "stack.pid"


def _state_path(settings: Settings) -> Path:
    return settings.run_dir / "stack.json"


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def read_state(settings: Settings) -> dict[str, Any]:
    try:
        return dict(json.loads(_state_path(settings).read_text()))
    except (FileNotFoundError, ValueError):
        return {}


def is_running(settings: Settings) -> bool:
    """True while a supervisor of this home holds the stack lock."""
    path = _lock_path(settings)
    if not path.exists():
        return False
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def _supervisor_pid(settings: Settings) -> int | None:
    try:
        return int(_pid_path(settings).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _ours(pid: int, settings: Settings) -> bool:
    """Whether `pid` was started by this home's stack (it carries the stack's marker)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return f"{STACK_MARKER}={settings.home_dir}".encode() in environ


def stack_processes(settings: Settings) -> list[int]:
    """Every live process that carries this home's stack marker (children and everything they
    started inherit it), except the calling process."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid() and _ours(int(entry.name), settings):
            try:
                if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                    found.append(int(entry.name))
            except (OSError, IndexError):
                continue
    return found


# Health -------------------------------------------------------------------------------------


def _healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        # verify=False: a loopback probe of our own server, which may use a self-signed cert.
        return httpx.get(url, timeout=timeout, verify=False).status_code < 400
    except httpx.HTTPError:
        return False


def _port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


@dataclass
class ServiceStatus:
    name: str
    title: str
    url: str
    pid: int | None
    healthy: bool
    restarts: int = 0


@dataclass
class StackStatus:
    running: bool
    pid: int | None
    state: str
    services: list[ServiceStatus]

    @property
    def up(self) -> bool:
        return self.running and self.state == "up" and all(s.healthy for s in self.services)


def status(settings: Settings | None = None) -> StackStatus:
    """Each service's URL and live health; URLs as the running stack recorded them."""
    settings = settings or get_settings()
    running = is_running(settings)
    state = read_state(settings) if running else {}
    recorded = state.get("services") or {}
    listed: list[ServiceStatus] = []
    if recorded:
        for name, info in recorded.items():
            listed.append(ServiceStatus(name, info["title"], info["url"], info.get("pid"),
                                        _healthy(info["health_url"]), info.get("restarts", 0)))
    elif settings.prefect_auth_string_path.exists():  # started before: show where it would answer
        for service in services(settings):
            listed.append(ServiceStatus(service.name, service.title, service.url, None,
                                        running and _healthy(service.health_url)))
    return StackStatus(running, _supervisor_pid(settings) if running else None,
                       state.get("state", "stopped") if running else "stopped", listed)


# The supervisor -----------------------------------------------------------------------------


def _set_parent_death_signal() -> None:
    # Runs in the child before exec: if the supervisor dies without cleaning up (SIGKILL),
    # the kernel sends the child SIGTERM instead of leaving it orphaned.
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class _Child:
    service: Service
    proc: subprocess.Popen[bytes] | None = None
    healthy: bool = False
    started_at: float = 0.0
    restarts: int = 0
    backoff_s: float = 1.0
    restart_at: float | None = None
    next_probe_at: float = 0.0

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Supervisor:
    """Starts `services` in order (each once its `requires` are healthy), waits until all are
    healthy, restarts crashed ones with exponential backoff, and stops them all on SIGTERM,
    SIGINT or SIGHUP: each child's process group gets its stop signal, then SIGKILL after
    a grace period. Holds the stack lock for its whole life."""

    def __init__(self, settings: Settings, *, out: IO[str] | None = None) -> None:
        self.settings = settings
        self.out = out or sys.stdout
        self.children: list[_Child] = []
        self.stop_requested: int | None = None
        self.state = "starting"
        self._lock: IO[str] | None = None

    # -- messages and files --
    def say(self, message: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {message}", file=self.out, flush=True)

    def _write_state(self) -> None:
        _write_json(_state_path(self.settings), {
            "pid": os.getpid(),
            "state": self.state,
            "home": str(self.settings.home_dir),
            "services": {
                c.service.name: {
                    "title": c.service.title, "url": c.service.url, "health_url": c.service.health_url,
                    "pid": c.proc.pid if c.alive and c.proc else None, "healthy": c.healthy,
                    "restarts": c.restarts,
                }
                for c in self.children
            },
        })

    def _acquire_lock(self) -> None:
        self.settings.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        handle = open(_lock_path(self.settings), "a")  # noqa: SIM115 - held for our lifetime
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise StackError(f"The stack of {self.settings.home_dir} is already up.") from None
        self._lock = handle
        _pid_path(self.settings).write_text(f"{os.getpid()}\n")

    def _release_lock(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            _pid_path(self.settings).unlink()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    # -- children --
    def _start(self, child: _Child) -> None:
        service = child.service
        log_path = self.settings.logs_dir / f"{service.name}.log"
        fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with open(fd, "ab") as log:
            log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting {service.title}\n".encode())
            log.flush()
            child.proc = subprocess.Popen(
                service.argv,
                env={**base_env(self.settings), **service.env},
                cwd=str(self.settings.home_dir),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopped as a whole
                preexec_fn=_set_parent_death_signal,
            )
        child.healthy = False
        child.started_at = time.monotonic()
        child.restart_at = None
        child.next_probe_at = 0.0
        self.say(f"started {service.title} (pid {child.proc.pid}), log: {log_path}")

    def _probe(self, child: _Child) -> bool:
        now = time.monotonic()
        if child.healthy or now < child.next_probe_at:
            return child.healthy
        child.next_probe_at = now + 0.25
        child.healthy = _healthy(child.service.health_url, timeout=1.0)
        return child.healthy

    def _stop_all(self) -> None:
        """Signal every child's group, wait, escalate to SIGKILL; leaves no group member."""
        live = [c for c in reversed(self.children) if c.proc is not None]
        for child in live:
            assert child.proc is not None
            if child.proc.poll() is None:
                self.say(f"stopping {child.service.title} (pid {child.proc.pid})")
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.proc.pid, child.service.stop_signal)
        deadline = time.monotonic() + _STOP_GRACE_S
        for child in live:
            assert child.proc is not None
            try:
                child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(f"{child.service.title} did not stop within {_STOP_GRACE_S:.0f}s: killing it")
        # Whatever is left in a group (a leader that hung, or grandchildren a leader left
        # behind) gets SIGKILL after a short grace.
        end = time.monotonic() + 2.0
        for child in live:
            assert child.proc is not None
            while time.monotonic() < end and _group_alive(child.proc.pid):
                time.sleep(0.05)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.proc.wait(timeout=5)
            child.healthy = False

    # -- lifecycle --
    def _on_signal(self, signum: int, _frame: object) -> None:
        if self.stop_requested is None:
            self.stop_requested = signum

    def _preflight(self) -> None:
        busy = [c.service for c in self.children
                if c.service.port is not None and not _port_free(c.service.bind, c.service.port)]
        if busy:
            raise StackError("; ".join(
                f"port {s.port} of the {s.title} is in use"
                + (f" (set {s.port_env} to a free port)" if s.port_env else "") for s in busy
            ) + ".")

    def _start_all(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        started: set[str] = set()
        while not all(c.healthy for c in self.children):
            if self.stop_requested is not None:
                return
            healthy = {c.service.name for c in self.children if c.healthy}
            for child in self.children:
                name = child.service.name
                if name not in started and all(r in healthy for r in child.service.requires):
                    self._start(child)
                    started.add(name)
                elif name in started and not child.healthy:
                    assert child.proc is not None
                    if child.proc.poll() is not None:
                        raise StackError(
                            f"{child.service.title} exited with code {child.proc.returncode} while starting. "
                            f"Its log ({self.settings.logs_dir / (name + '.log')}) ends with:\n"
                            + _tail(self.settings.logs_dir / f"{name}.log")
                        )
                    if self._probe(child):
                        self.say(f"{child.service.title} is healthy at {child.service.url}")
                        self._write_state()
            if time.monotonic() > deadline:
                late = ", ".join(c.service.title for c in self.children if not c.healthy)
                raise StackError(f"not healthy within {timeout_s:.0f}s: {late}; "
                                 f"see {self.settings.logs_dir}.")
            time.sleep(0.1)

    def _supervise(self) -> None:
        while self.stop_requested is None:
            now = time.monotonic()
            for child in self.children:
                assert child.proc is not None or child.restart_at is not None
                if child.restart_at is not None:
                    if now >= child.restart_at:
                        child.restarts += 1
                        self._start(child)
                        self._write_state()
                    continue
                assert child.proc is not None
                code = child.proc.poll()
                if code is not None:
                    if now - child.started_at > _STABLE_AFTER_S:
                        child.backoff_s = 1.0
                    self.say(f"{child.service.title} exited with code {code}; "
                             f"restarting in {child.backoff_s:.0f}s")
                    _kill_group(child.proc.pid)  # what it left behind would hold its port
                    child.healthy = False
                    child.restart_at = now + child.backoff_s
                    child.backoff_s = min(_BACKOFF_MAX_S, child.backoff_s * 2)
                    self._write_state()
                elif not child.healthy and self._probe(child):
                    self.say(f"{child.service.title} is healthy again at {child.service.url}")
                    self._write_state()
            time.sleep(0.2)

    def run(self, *, on_ready: Callable[[Supervisor], None] | None = None, timeout_s: float = 300.0) -> int:
        """Run the stack until a stop signal. Returns the exit code (0 after a clean stop)."""
        settings = self.settings
        for path in (settings.home_dir, settings.logs_dir, settings.run_dir, settings.prefect_home,
                     settings.mlflow_dir):
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._acquire_lock()
        stop_signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        previous = {s: signal.signal(s, self._on_signal) for s in stop_signals}
        code = 0
        try:
            leftovers = stack_processes(settings)
            if leftovers:  # a previous supervisor was killed: its children must not hold ports
                self.say(f"stopping {len(leftovers)} leftover process(es) of a previous run: {leftovers}")
                _terminate_pids(leftovers)
            self.children = [_Child(service) for service in services(settings)]
            self._preflight()
            self._write_state()
            self._start_all(timeout_s)
            if self.stop_requested is None:
                self.state = "up"
                self._write_state()
                self.say("the stack is up")
                if on_ready is not None:
                    on_ready(self)
                self._supervise()
            received = signal.Signals(self.stop_requested or signal.SIGTERM).name
            self.say(f"received {received}: stopping the stack")
        except StackError as exc:
            self.say(f"error: {exc}")
            self.state = "failed"
            code = 1
        finally:
            if self.state != "failed":
                self.state = "stopping"
            with contextlib.suppress(OSError):
                self._write_state()
            self._stop_all()
            self.state = "failed" if code else "stopped"
            with contextlib.suppress(OSError):
                self._write_state()
            self._release_lock()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        self.say("the stack is stopped" if code == 0 else "the stack did not start")
        return code


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _terminate_pids(pids: list[int], timeout_s: float = 10.0) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
        time.sleep(0.1)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


# The commands -------------------------------------------------------------------------------


def up(settings: Settings | None = None, *, on_ready: Callable[[Supervisor], None] | None = None) -> int:
    """Foreground: this process supervises the stack until SIGTERM/SIGINT."""
    settings = settings or get_settings()
    return Supervisor(settings).run(on_ready=on_ready)


def up_detached(settings: Settings | None = None, *, timeout_s: float = 300.0) -> StackStatus:
    """Start the supervisor as a daemon and wait until the stack is healthy.

    Raises `StackError` (with the end of the stack log) if it does not come up."""
    settings = settings or get_settings()
    settings.logs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    log_path = settings.logs_dir / "stack.log"
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with open(fd, "ab") as log:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "agentdeploy.stack", "supervise"],
            env={**os.environ, "AGENTDEPLOY_HOME": str(settings.home_dir)},
            cwd=str(settings.home_dir), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout_s
    while True:
        state = read_state(settings)
        if state.get("pid") == daemon.pid and state.get("state") == "up":
            daemon.returncode = 0  # it lives on as a daemon: mark it so Popen does not warn
            return status(settings)
        if daemon.poll() is not None:
            raise StackError(f"the stack did not start; {log_path} ends with:\n{_tail(log_path)}")
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(daemon.pid, signal.SIGTERM)
            raise StackError(f"the stack was not healthy within {timeout_s:.0f}s; see {log_path}.")
        time.sleep(0.2)


def down(settings: Settings | None = None, *, timeout_s: float = 60.0) -> bool:
    """Stop the stack of this home and every process it left. Returns False if it was not up."""
    settings = settings or get_settings()
    was_running = is_running(settings)
    pid = _supervisor_pid(settings)
    if was_running and pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while is_running(settings) and time.monotonic() < deadline:
            time.sleep(0.1)
        if is_running(settings):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
    # Belt and braces: a supervisor killed with SIGKILL leaves its children behind.
    leftovers = stack_processes(settings)
    if leftovers:
        _terminate_pids(leftovers)
    return was_running


# What the scheduled flows did (for `agentdeploy status`) ---------------------------------------

# The flow deployments that run on a schedule, as `flow-name/deployment-name`.
SCHEDULED_DEPLOYMENTS = (
    "rotate-credentials/rotate-credentials",
    "format-inference-logs/format-inference-logs",
)


_RAN = ["RUNNING", "COMPLETED", "FAILED", "CRASHED"]


@dataclass(frozen=True)
class ScheduledRun:
    """The last run of one scheduled deployment (`state` None: it has not run yet)."""

    deployment: str
    state: str | None = None
    time: str | None = None  # ISO 8601, when the run started (else when it was expected)
    message: str | None = None
    next_run: str | None = None  # the next scheduled start


def _prefect_http(settings: Settings, timeout: float) -> httpx.Client:
    env = prefect_client_env(settings)
    user, _, password = env["PREFECT_API_AUTH_STRING"].partition(":")
    return httpx.Client(base_url=env["PREFECT_API_URL"], auth=(user, password), timeout=timeout)


def scheduled_runs(settings: Settings | None = None, *, timeout: float = 5.0) -> list[ScheduledRun]:
    """The last run of each scheduled deployment the stack's Prefect server knows, read from its
    API. Deployments not served (yet) are left out; raises `Unavailable` if Prefect cannot be read."""
    settings = settings or get_settings()
    found: list[ScheduledRun] = []
    try:
        with _prefect_http(settings, timeout) as prefect:
            for name in SCHEDULED_DEPLOYMENTS:
                answer = prefect.get(f"/deployments/name/{name}")
                if answer.status_code == 404:
                    continue
                answer.raise_for_status()
                deployment_id = answer.json()["id"]
                by_deployment = {"deployments": {"id": {"any_": [deployment_id]}}}
                last = prefect.post("/flow_runs/filter", json={
                    **by_deployment, "limit": 1, "sort": "START_TIME_DESC",
                    # Not CANCELLED: a run that overlapped a running one is cancelled at once.
                    "flow_runs": {"state": {"type": {"any_": _RAN}}}})
                last.raise_for_status()
                upcoming = prefect.post("/flow_runs/filter", json={
                    **by_deployment, "limit": 1, "sort": "EXPECTED_START_TIME_ASC",
                    "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}}})
                upcoming.raise_for_status()
                next_run = upcoming.json()[0].get("expected_start_time") if upcoming.json() else None
                if not last.json():
                    found.append(ScheduledRun(name, next_run=next_run))
                    continue
                run = last.json()[0]
                state = run.get("state") or {}
                found.append(ScheduledRun(
                    name, state=state.get("name") or run.get("state_name"),
                    time=run.get("start_time") or run.get("expected_start_time"),
                    message=(state.get("message") or "")[:200] or None, next_run=next_run))
    except httpx.HTTPError as exc:
        raise Unavailable(f"Cannot read the Prefect API at {settings.prefect_api_url}: "
                          f"{exc.__class__.__name__}.") from None
    return found


def _scalar(client: Any, warehouse_id: str, statement: str) -> Any:
    """The first value of a one-row SQL statement through the SQL statements API."""
    answer = client.post("/api/2.0/sql/statements", json={
        "warehouse_id": warehouse_id, "statement": statement, "wait_timeout": "30s",
        "disposition": "INLINE", "format": "JSON_ARRAY"})
    status = answer.get("status") or {}
    if status.get("state") != "SUCCEEDED":
        error = (status.get("error") or {}).get("message", "")
        raise Unavailable(f"{statement!r} ended {status.get('state')}: {error}")
    rows = (answer.get("result") or {}).get("data_array") or []
    return rows[0][0] if rows and rows[0] else None


def _table_exists(client: Any, full_name: str) -> bool:
    return bool(client.get(f"/api/2.1/unity-catalog/tables/{full_name}/exists").get("table_exists"))


def count_rows(client: Any, full_name: str, warehouse_id: str) -> int | None:
    """Rows of a table through the SQL statements API; None if it does not exist (or is not
    visible to the caller)."""
    if not _table_exists(client, full_name):
        return None
    value = _scalar(client, warehouse_id, f"SELECT count(*) FROM {full_name}")
    return int(value or 0)


@dataclass(frozen=True)
class FormattingLag:
    """How far an endpoint's request logs trail its payload table: the newest payload row's
    time minus the newest request-log row's (0 when caught up). None where a table is missing."""

    endpoint_name: str
    payload_table: str
    payload_rows_newest: str | None
    lag_s: float | None
    note: str = ""


def formatting_lags(client: Any, warehouse_id: str) -> list[FormattingLag]:
    """One entry per deployed model (its payload table), read through the catalog and SQL APIs."""
    from datetime import UTC, datetime

    out: list[FormattingLag] = []
    seen: set[str] = set()
    for record in client.get("/api/2.0/agents/deployments").get("chain_deployments", []):
        payload = f"{record['model_name']}_payload"
        if payload in seen:
            continue
        seen.add(payload)
        if not _table_exists(client, payload):
            out.append(FormattingLag(record["endpoint_name"], payload, None, None, "no payload table yet"))
            continue
        newest_payload = _scalar(client, warehouse_id, f"SELECT max(timestamp_ms) FROM {payload}")
        newest = (datetime.fromtimestamp(int(newest_payload) / 1000, UTC).isoformat(timespec="seconds")
                  if newest_payload is not None else None)
        logs = f"{payload}_request_logs"
        if not _table_exists(client, logs):
            out.append(FormattingLag(record["endpoint_name"], payload, newest, None,
                                     "no request-log table yet"))
            continue
        newest_logged = _scalar(client, warehouse_id, f"SELECT max(timestamp_ms) FROM {logs}")
        if newest_payload is None:
            lag: float | None = 0.0
        elif newest_logged is None:
            lag = None
        else:
            lag = max(0.0, (int(newest_payload) - int(newest_logged)) / 1000)
        out.append(FormattingLag(record["endpoint_name"], payload, newest, lag,
                                 "" if lag is not None else "nothing formatted yet"))
    return out


def _main(argv: list[str]) -> int:
    """`python -m agentdeploy.stack supervise`: the detached supervisor."""
    if argv != ["supervise"]:
        print("usage: python -m agentdeploy.stack supervise", file=sys.stderr)
        return 2
    try:
        return Supervisor(get_settings()).run()
    except StackError as exc:
        print(f"error: {exc}", flush=True)
        return 1


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
