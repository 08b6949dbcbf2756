"""Served entities as local worker processes, one per entity, supervised by the server.

Each entity gets a directory under the workers root:

    <workers root>/<name>/              root:<its gid> 0750  (the worker reads, cannot write)
        model/                          the MLflow model, downloaded once (root-owned, readable)
        model.uri                       which `models:/` URI `model/` holds
        credentials.json                root:<its gid> 0640, replaced atomically (token rotation)
        home/                           <its uid> 0700: the worker's cwd, HOME and TMPDIR
        worker.pid                      to stop a worker left behind by a crashed server

and its log at `AGENTDEPLOY_HOME/logs/<name>.log`.

Isolation: the worker's environment holds only its own settings, the workspace URL, its
credentials file path and the user's `environment_vars`. When the server runs as root, each
worker runs under its own unprivileged uid/gid (from `UID_BASE`, no /etc/passwd entry needed),
so it can read neither the server's files (keys, admin credentials, workspace database, Prefect
auth string: all root 0600/0700) nor another worker's directory, environment or memory. Two
consequences of running as another uid: the venv's interpreter (a symlink into root's 0700
pyenv) cannot be executed, so the worker runs the system `python3.X` of the same minor version
with the venv's site-packages on PYTHONPATH; and a worker's directory must be reachable by path
from `/` (MLflow resolves model paths to absolute ones). So the workers root of an isolating
backend is `/var/lib/agentdeploy/workers-<id of home>` (0711), outside AGENTDEPLOY_HOME, which is
sealed to 0700 (its database, keys and credentials then unreachable whatever their own modes).
Without isolation (not root) it is `AGENTDEPLOY_HOME/workers`.

Supervision: a watcher per entity polls the process (a dead worker is noticed within
`POLL_S`) and its /health; a worker that exits or stops answering is restarted on a new port
with backoff (0.2 s doubling to 30 s, reset once it stayed up a minute), with no call needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import agentdeploy
from agentdeploy.serving.backends.base import (
    EntityHealth,
    EntityState,
    ServedEntitySpec,
    ServingBackend,
    StartFailed,
)
from agentdeploy.settings import Settings

__all__ = ["LocalProcessBackend", "download_model", "UID_BASE", "UID_COUNT"]

log = logging.getLogger("agentdeploy.serving.local")

UID_BASE = 62000
UID_COUNT = 1000
POLL_S = 0.1  # how often a watcher checks its process (a waitpid: cheap)
HEALTH_EVERY_S = 2.0
HEALTH_TIMEOUT_S = 2.0
HEALTH_FAILURES_TO_RESTART = 3
BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
STABLE_S = 60.0  # up this long: the next crash restarts without waiting
STOP_GRACE_S = 10.0
LOG_ROTATE_BYTES = 20 * 1024 * 1024


def _now() -> datetime:
    return datetime.now(UTC)


def download_model(model_uri: str, dst: Path, tracking_uri: str) -> None:
    """Download `model_uri` (models:/<name>/<version> or models:/<name>@<alias>) from the
    registry at `tracking_uri` into `dst`, atomically (a partial download never looks complete)."""
    import mlflow.artifacts
    from mlflow import MlflowClient

    # Resolved here: mlflow's models:/ repository asks the *default* registry (sqlite:///mlflow.db
    # in the cwd) whatever registry_uri it is given.
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    if not model_uri.startswith("models:/"):
        raise ValueError(f"expected a models:/ URI, got {model_uri!r}")
    reference = model_uri[len("models:/") :]
    if "@" in reference:
        name, alias = reference.rsplit("@", 1)
        version = client.get_model_version_by_alias(name, alias).version
    else:
        name, _, version = reference.rpartition("/")
    source = client.get_model_version_download_uri(name, version)
    tmp = dst.with_name(f".{dst.name}.{secrets.token_hex(4)}.tmp")
    try:
        mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(tmp), tracking_uri=tracking_uri)
        # Through a tracking server that proxies artifacts (`mlflow server --serve-artifacts`, as the
        # stack runs it) the model lands one level down, in `artifacts/`. (Edit by the gateway engineer.)
        if not (tmp / "MLmodel").exists():
            nested = [p for p in tmp.iterdir() if (p / "MLmodel").is_file()]
            if len(nested) == 1:
                staged = tmp.with_name(tmp.name + ".model")
                os.replace(nested[0], staged)
                shutil.rmtree(tmp)
                os.replace(staged, tmp)
        if not (tmp / "MLmodel").is_file():
            raise FileNotFoundError(f"{model_uri} holds no MLmodel file")
        if dst.exists():
            shutil.rmtree(dst)
        os.replace(tmp, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _reachable_by_others(path: Path) -> bool:
    """Whether a process of another uid can traverse from / to `path` (every ancestor o+x)."""
    for ancestor in [path, *path.parents]:
        try:
            mode = ancestor.stat().st_mode
        except FileNotFoundError:
            continue  # created later by us with a traversable mode
        if not mode & 0o001:
            return False
    return True


def _worker_interpreter(isolate: bool) -> str:
    if not isolate:
        return sys.executable
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (Path("/usr/bin") / version, Path("/usr/local/bin") / version):
        real = candidate.resolve()
        if real.is_file() and real.stat().st_mode & 0o005 == 0o005 and _reachable_by_others(real.parent):
            return str(candidate)
    raise RuntimeError(
        f"Workers run as unprivileged users and need a {version} they can execute "
        f"(e.g. Debian's /usr/bin/{version}); none was found."
    )


def _python_path() -> str:
    """site-packages of this environment, and the source tree of an editable install (its .pth
    finder is not run for PYTHONPATH entries)."""
    paths = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    package_root = str(Path(agentdeploy.__file__).resolve().parents[1])
    if package_root not in paths:
        paths.insert(0, package_root)
    return os.pathsep.join(dict.fromkeys(paths))


def _open_code_paths(python_path: str) -> list[Path]:
    """Workers (other uids) import from this environment's site-packages and source tree: each
    ancestor of those must be traversable by others. A checkout under a private directory (e.g.
    `mktemp -d`, mode 0700) is not, so add traverse-only permission (o+x, never read) to the
    ancestors that lack it; returns what was changed. The server's home stays sealed (0700)."""
    changed: list[Path] = []
    for entry in python_path.split(os.pathsep):
        path = Path(entry).resolve()
        for directory in [*reversed(path.parents), path]:
            try:
                mode = directory.stat().st_mode
            except FileNotFoundError:
                break
            if not mode & 0o001:
                directory.chmod(stat.S_IMODE(mode) | 0o001)
                changed.append(directory)
    return changed


class _Entity:
    def __init__(self, spec: ServedEntitySpec, directory: Path, uid: int | None) -> None:
        self.spec = spec
        self.dir = directory
        self.uid = uid
        self.state = EntityState.STARTING
        self.message = ""
        self.restarts = 0
        self.last_start_s: float | None = None
        self.since = _now()
        self.proc: subprocess.Popen[bytes] | None = None
        self.port: int | None = None
        self.ready_address: tuple[str, int] | None = None
        self.watcher: asyncio.Task[None] | None = None
        self.started_at = 0.0

    def health(self) -> EntityHealth:
        return EntityHealth(
            state=self.state,
            message=self.message,
            restarts=self.restarts,
            last_start_s=self.last_start_s,
            since=self.since,
            pid=self.proc.pid if self.proc else None,
        )


class LocalProcessBackend(ServingBackend):
    """One supervised worker process per served entity on this machine."""

    def __init__(
        self,
        settings: Settings,
        *,
        workers_root: Path | None = None,
        isolate: bool | None = None,
        start_timeout_s: float = 120.0,
        on_change: Callable[[str, EntityHealth], None] | None = None,
    ) -> None:
        self.settings = settings
        # Only root can switch uid; a non-root stack still scrubs the environment.
        self.isolate = (os.geteuid() == 0) if isolate is None else isolate
        self.root = (workers_root or self._default_workers_root()).resolve()
        self.start_timeout_s = start_timeout_s
        self.on_change = on_change
        self.python = _worker_interpreter(self.isolate)
        self.python_path = _python_path()
        self._entities: dict[str, _Entity] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._spare: subprocess.Popen[bytes] | None = None  # see worker.py: a pre-started interpreter
        if self.isolate:
            for directory in _open_code_paths(self.python_path):
                log.warning("made %s traversable (o+x) so workers can import the installed code", directory)
            self._seal_home()

    def _default_workers_root(self) -> Path:
        if not self.isolate:
            return self.settings.workers_dir
        # Outside AGENTDEPLOY_HOME, which stays 0700: nothing of the server's is reachable by path.
        home_id = hashlib.sha256(str(self.settings.home_dir).encode()).hexdigest()[:12]
        return Path("/var/lib/agentdeploy") / f"workers-{home_id}"

    def _seal_home(self) -> None:
        """Make the server's own files unreachable for worker uids, whatever modes their creators
        used (SQLite creates its files 0644 under the usual umask)."""
        home = self.settings.home_dir
        if not home.is_dir():
            return
        inside = self.root.is_relative_to(home) and self.root != home
        home.chmod(0o711 if inside else 0o700)  # 0711 only when workers must traverse it
        if inside:  # every other entry of home: owner only
            keep = self.root.relative_to(home).parts[0]
            for entry in home.iterdir():
                if entry.name != keep and not entry.is_symlink():
                    entry.chmod(entry.stat().st_mode & 0o700)
        for path in (
            self.settings.credentials_path,
            self.settings.keys_dir,
            home / "workspace.db",
            home / "workspace.db-wal",
            home / "workspace.db-shm",
        ):
            with contextlib.suppress(FileNotFoundError):
                path.chmod(path.stat().st_mode & 0o700)

    # --- directories and uids -------------------------------------------------------------------
    def entity_dir(self, name: str) -> Path:
        return self.root / name

    def log_path(self, name: str) -> Path:
        return self.settings.logs_dir / f"{name}.log"

    def _ensure_root(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        # Isolated: traversable, not listable (a worker finds only its own directory).
        self.root.chmod(0o711 if self.isolate else 0o700)

    def _allocate_uid(self, name: str) -> int | None:
        """The entity's uid: kept across restarts of the server (read back from its directory's
        group), never shared with another entity while their directories exist."""
        if not self.isolate:
            return None
        directory = self.entity_dir(name)
        if directory.exists():
            gid = directory.stat().st_gid
            if UID_BASE <= gid < UID_BASE + UID_COUNT:
                return gid
        used = {e.uid for e in self._entities.values()}
        with contextlib.suppress(FileNotFoundError):
            used |= {p.stat().st_gid for p in self.root.iterdir() if p.is_dir()}
        for uid in range(UID_BASE, UID_BASE + UID_COUNT):
            if uid not in used:
                return uid
        raise StartFailed(f"No free worker uid in {UID_BASE}..{UID_BASE + UID_COUNT - 1}.")

    def _prepare_dir(self, name: str, uid: int | None) -> Path:
        self._ensure_root()
        directory = self.entity_dir(name)
        directory.mkdir(exist_ok=True, mode=0o700)
        home = directory / "home"
        home.mkdir(exist_ok=True, mode=0o700)
        (home / "tmp").mkdir(exist_ok=True, mode=0o700)
        if uid is not None:
            os.chown(directory, 0, uid)
            directory.chmod(0o750)
            for path, _dirs, files in os.walk(home):
                os.chown(path, uid, uid)
                for entry in files:
                    with contextlib.suppress(FileNotFoundError):
                        os.chown(os.path.join(path, entry), uid, uid, follow_symlinks=False)
            home.chmod(0o700)
        else:
            directory.chmod(0o700)
        return directory

    def _prepare_model(self, spec: ServedEntitySpec, directory: Path) -> Path:
        model_dir = directory / "model"
        marker = directory / "model.uri"
        current = marker.read_text() if marker.exists() else None
        if not (model_dir / "MLmodel").exists() or current != spec.model_uri:
            if spec.model_path is not None:
                tmp = directory / f".model.{secrets.token_hex(4)}.tmp"
                shutil.copytree(spec.model_path, tmp, symlinks=False)
                if model_dir.exists():
                    shutil.rmtree(model_dir)
                os.replace(tmp, model_dir)
            else:
                download_model(spec.model_uri, model_dir, self.settings.mlflow_tracking_uri)
            marker.write_text(spec.model_uri)
            # Readable by the worker (a 0700 directory fails with a misleading "no MLmodel").
            for path, _dirs, files in os.walk(model_dir):
                os.chmod(path, 0o755)
                for entry in files:
                    os.chmod(os.path.join(path, entry), 0o644)
        return model_dir

    # --- the contract --------------------------------------------------------------------------
    async def start(self, spec: ServedEntitySpec) -> None:
        lock = self._locks.setdefault(spec.name, asyncio.Lock())
        async with lock:
            previous = self._entities.get(spec.name)
            if previous is not None:
                await self._terminate(previous, EntityState.STOPPED, "replaced")
            uid = previous.uid if previous is not None else self._allocate_uid(spec.name)
            entity = _Entity(spec, self.entity_dir(spec.name), uid)
            self._entities[spec.name] = entity
            self._set(entity, EntityState.STARTING, "preparing the model")
            started = time.monotonic()
            try:
                await asyncio.to_thread(self._prepare_dir, spec.name, uid)
                await asyncio.to_thread(self._prepare_model, spec, entity.dir)
                await self._spawn_until_healthy(entity)
            except Exception as exc:
                await self._kill(entity)
                tail = self.log_tail(spec.name, 30)
                message = f"{spec.name} did not start: {type(exc).__name__}: {exc}"
                self._set(entity, EntityState.FAILED, message)
                log.error("%s", message)
                raise StartFailed(f"{message}\n--- last lines of its log ---\n{tail}") from None
            entity.last_start_s = time.monotonic() - started
            self._set(entity, EntityState.READY, "")
            log.info(
                "%s ready on port %s in %.2fs (pid %s)",
                spec.name,
                entity.port,
                entity.last_start_s,
                entity.proc.pid if entity.proc else None,
            )
            entity.watcher = asyncio.ensure_future(self._watch(entity))

    async def stop(self, name: str) -> None:
        entity = self._entities.get(name)
        if entity is None:
            return
        async with self._locks.setdefault(name, asyncio.Lock()):
            await self._terminate(entity, EntityState.STOPPED, "stopped")

    async def remove(self, name: str) -> None:
        await self.stop(name)
        self._entities.pop(name, None)
        await asyncio.to_thread(shutil.rmtree, self.entity_dir(name), True)
        with contextlib.suppress(OSError):  # the last one gone: leave no empty root behind
            self.root.rmdir()

    def health(self, name: str) -> EntityHealth:
        entity = self._entities.get(name)
        return entity.health() if entity else EntityHealth(state=EntityState.STOPPED, message="unknown")

    def address(self, name: str) -> tuple[str, int] | None:
        entity = self._entities.get(name)
        return entity.ready_address if entity is not None else None

    def credentials_path(self, name: str) -> Path:
        return self.entity_dir(name) / "credentials.json"

    def write_credentials(self, name: str, token: str, expires_at: datetime | float | None) -> None:
        entity = self._entities.get(name)
        uid = entity.uid if entity is not None else self._allocate_uid(name)
        if not self.entity_dir(name).exists():
            self._prepare_dir(name, uid)
        if isinstance(expires_at, datetime):
            expires: object = expires_at.astimezone(UTC).isoformat()
        else:
            expires = expires_at
        data = json.dumps({"token": token, "expires_at": expires}).encode()
        path = self.credentials_path(name)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            if uid is not None:  # readable by root and this worker's group only
                os.fchown(fd, 0, uid)
                os.fchmod(fd, 0o640)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)

    def log_tail(self, name: str, lines: int = 100) -> str:
        path = self.log_path(name)
        try:
            with open(path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - max(lines, 1) * 400))
                text = f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    async def close(self) -> None:
        await asyncio.gather(*(self.stop(name) for name in list(self._entities)), return_exceptions=True)
        spare, self._spare = self._spare, None
        if spare is not None and spare.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(spare.pid, signal.SIGKILL)
            await asyncio.to_thread(spare.wait)

    # --- processes ---------------------------------------------------------------------------
    def _set(self, entity: _Entity, state: EntityState, message: str) -> None:
        if entity.state != state:
            entity.since = _now()
        entity.state, entity.message = state, message
        entity.ready_address = (
            ("127.0.0.1", entity.port) if state == EntityState.READY and entity.port else None
        )
        if self.on_change is not None:
            try:
                self.on_change(entity.spec.name, entity.health())
            except Exception:
                log.exception("on_change callback failed for %s", entity.spec.name)

    def _environment(self, entity: _Entity, port: int) -> dict[str, str]:
        home = entity.dir / "home"
        spec = entity.spec
        env = dict(spec.environment_vars)  # the user's values first: ours below win
        env.update(
            PATH="/usr/local/bin:/usr/bin:/bin",
            HOME=str(home),
            TMPDIR=str(home / "tmp"),
            LANG="C.UTF-8",
            PYTHONPATH=self.python_path,
            PYTHONUNBUFFERED="1",
            AGENTDEPLOY_WORKER_NAME=spec.name,
            AGENTDEPLOY_WORKER_MODEL_PATH=str(entity.dir / "model"),
            AGENTDEPLOY_WORKER_HOST="127.0.0.1",
            AGENTDEPLOY_WORKER_PORT=str(port),
            AGENTDEPLOY_HOST=spec.workspace_host or self.settings.server_url,
            AGENTDEPLOY_CREDENTIALS_FILE=str(self.credentials_path(spec.name)),
        )
        return env

    def _spawn(self, entity: _Entity) -> None:
        """Start the entity's worker: the spare interpreter, told what to be (a fresh one when
        there is no live spare). Called on the event loop's thread: the PR_SET_PDEATHSIG of the
        process follows the thread that started it."""
        name = entity.spec.name
        self._kill_leftover(entity)
        port = _free_port()
        log_path = self.log_path(name)
        log_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(FileNotFoundError):
            if log_path.stat().st_size > LOG_ROTATE_BYTES:
                os.replace(log_path, log_path.with_suffix(".log.1"))
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, f"--- {_now().isoformat()} starting worker for {name} on port {port}\n".encode())
        finally:
            os.close(fd)
        order = {"log": str(log_path), "uid": entity.uid, "cwd": str(entity.dir / "home"),
                 "env": self._environment(entity, port)}
        line = json.dumps(order).encode() + b"\n"
        proc = self._take_spare()
        try:
            self._send(proc, line)
        except OSError:  # the spare died in between: a fresh one
            proc = self._start_spare()
            self._send(proc, line)
        entity.proc = proc
        entity.port = port
        entity.started_at = time.monotonic()
        (entity.dir / "worker.pid").write_text(str(proc.pid))

    @property
    def spare_pid(self) -> int | None:
        """The pre-started interpreter the next worker start will use, if one is running."""
        spare = self._spare
        return spare.pid if spare is not None and spare.poll() is None else None

    @staticmethod
    def _send(proc: subprocess.Popen[bytes], line: bytes) -> None:
        assert proc.stdin is not None
        proc.stdin.write(line)
        proc.stdin.close()

    def _take_spare(self) -> subprocess.Popen[bytes]:
        spare, self._spare = self._spare, None
        if spare is None or spare.poll() is not None:
            spare = self._start_spare()
        return spare

    def _keep_a_spare(self) -> None:
        """Start the next spare (after a worker is up, so its imports do not slow that start)."""
        if self.settings.worker_spare and (self._spare is None or self._spare.poll() is not None):
            self._spare = self._start_spare()

    def _start_spare(self) -> subprocess.Popen[bytes]:
        """A worker interpreter that imports mlflow, then waits for its order on stdin. It runs
        as this process's user until the order names a uid, with nothing of an entity's."""
        log_path = self.settings.logs_dir / "worker-spare.log"
        log_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            return subprocess.Popen(
                [self.python, "-m", "agentdeploy.serving.worker", "--spare"],
                env={"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/nonexistent",
                     "PYTHONPATH": self.python_path, "PYTHONUNBUFFERED": "1"},
                cwd="/",
                stdin=subprocess.PIPE,
                stdout=fd,
                stderr=fd,
                start_new_session=True,
                close_fds=True,
            )
        finally:
            os.close(fd)

    def _kill_leftover(self, entity: _Entity) -> None:
        """A worker of this entity left running by a server that crashed: stop it."""
        pid_file = entity.dir / "worker.pid"
        try:
            pid = int(pid_file.read_text())
        except (FileNotFoundError, ValueError):
            return
        if entity.proc is not None and entity.proc.pid == pid:
            return
        if serves(pid, entity.dir / "home"):
            log.warning("stopping a leftover worker of %s (pid %d)", entity.spec.name, pid)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)

    async def _spawn_until_healthy(self, entity: _Entity) -> None:
        self._spawn(entity)
        assert entity.proc is not None and entity.port is not None
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            code = entity.proc.poll()
            if code is not None:
                raise RuntimeError(f"the worker exited with code {code} before it was healthy")
            if await _health_status(entity.port, HEALTH_TIMEOUT_S) == 200:
                self._keep_a_spare()
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"not healthy within {self.start_timeout_s:.0f}s")
            await asyncio.sleep(0.05)

    async def _kill(self, entity: _Entity) -> None:
        proc = entity.proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE_S
            while proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await asyncio.to_thread(proc.wait)
        with contextlib.suppress(FileNotFoundError):
            (entity.dir / "worker.pid").unlink()

    async def _terminate(self, entity: _Entity, state: EntityState, message: str) -> None:
        if entity.watcher is not None:
            entity.watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await entity.watcher
            entity.watcher = None
        entity.ready_address = None
        await self._kill(entity)
        self._set(entity, state, message)

    async def _watch(self, entity: _Entity) -> None:
        """Keep `entity` running: restart it when it exits or stops answering."""
        failures = 0  # consecutive failed restarts: the backoff step
        next_health = time.monotonic() + HEALTH_EVERY_S
        missed = 0
        while True:
            await asyncio.sleep(POLL_S)
            proc = entity.proc
            assert proc is not None and entity.port is not None
            code = proc.poll()
            if code is None and time.monotonic() >= next_health:
                next_health = time.monotonic() + HEALTH_EVERY_S
                missed = 0 if await _health_status(entity.port, HEALTH_TIMEOUT_S) == 200 else missed + 1
                if missed >= HEALTH_FAILURES_TO_RESTART:
                    log.error("%s stopped answering /health; killing pid %d", entity.spec.name, proc.pid)
                    await self._kill(entity)
                    code = proc.poll()
            if code is None:
                continue
            # The worker is gone: restart it, with backoff when restarts keep failing.
            if time.monotonic() - entity.started_at > STABLE_S:
                failures = 0
            entity.restarts += 1
            log.error("%s: worker exited with code %s; restart %d", entity.spec.name, code, entity.restarts)
            self._set(entity, EntityState.STARTING, f"worker exited with code {code}; restarting")
            while True:
                await asyncio.sleep(BACKOFF_S[min(failures, len(BACKOFF_S) - 1)])
                started = time.monotonic()
                try:
                    await self._spawn_until_healthy(entity)
                except Exception as exc:
                    failures += 1
                    await self._kill(entity)
                    self._set(
                        entity,
                        EntityState.STARTING,
                        f"restart failed ({type(exc).__name__}: {exc}); retrying",
                    )
                    continue
                break
            entity.last_start_s = time.monotonic() - started
            self._set(entity, EntityState.READY, "")
            missed = 0
            next_health = time.monotonic() + HEALTH_EVERY_S


def serves(pid: int, home: Path) -> bool:
    """Whether process `pid` is a worker working in `home` (an entity's <root>/<name>/home): a
    worker's identity is its working directory (a spare's is /), not its environment, which a
    spare sets only after it started."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return False
    return b"agentdeploy.serving.worker" in cmdline and cwd == str(home)


def worker_processes(key_prefix: str = "") -> dict[int, str]:
    """Live workers on this machine serving an entity whose key starts with `key_prefix`: pid ->
    key. Needs to read other users' /proc entries (root) when workers run isolated."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = Path(os.readlink(entry / "cwd"))
            if cwd.name != "home" or not cwd.parent.name.startswith(key_prefix):
                continue
            if b"agentdeploy.serving.worker" not in (entry / "cmdline").read_bytes():
                continue
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
        except (OSError, IndexError):
            continue
        found[int(entry.name)] = cwd.parent.name
    return found


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _health_status(port: int, timeout: float) -> int | None:
    """Status of GET /health on the worker, or None when it does not answer."""
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
        writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        line = await asyncio.wait_for(reader.readline(), timeout)
        return int(line.split()[1])
    except (TimeoutError, OSError, ValueError, IndexError):
        return None
    finally:
        if writer is not None:
            writer.close()
