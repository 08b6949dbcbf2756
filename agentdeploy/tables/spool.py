"""The payload spool: a local append-only log each gateway writes a row to before it answers.

Layout of `settings.spool_dir` (one directory per gateway process, guarded by an `flock`):

    lock                      held while a PayloadSpool is open
    spool-id                  random id; the Delta writer's application transaction id derives from it
    acknowledged              position up to which rows are committed to Delta (advisory: the Delta
                              transaction version is the real guard against duplicates)
    00000000000000000000.seg  segments, named by the position (global byte offset) of their first byte

A record is one frame: `magic(4) length(u32 LE) crc32(u32 LE, over length + payload) payload`.
The magic starts with 0xFF, a byte that never occurs in UTF-8 text, so a reader that meets a
damaged frame finds the next one by scanning for the magic and checking its CRC. Positions are
global byte offsets, so they only grow, across segments and restarts: a record's `end` is what
`acknowledge()` takes and what the writer stores as its Delta transaction version.

Durability: `append()` returns once `write(2)` returned (the bytes are in the page cache, which
survives a crash or `kill -9` of this process). With `sync="background"` a task fsyncs every
`sync_interval_ms` (the window an OS crash or power loss could lose); with `sync="always"` each
append waits for an fsync, and one fsync covers every record written while the previous one ran
(group commit). fsync runs on its own thread so the event loop keeps serving meanwhile.

Re-synchronising on the magic is safe for payload records: they never contain the byte 0xFF
(`payload.build_record` keeps bodies valid UTF-8), so no request body can fake a frame.

Damage is skipped, counted and never fatal: a torn last record (a partial write at a crash) and a
corrupted record in the middle are passed over by `read()`; `stats` counts them. A full disk or
an unwritable directory makes `append()` raise `SpoolUnavailable` (HTTP 503): the gateway refuses
the request rather than answer without logging. Segments are deleted only once `acknowledge()`
says the Delta commit holding all their records is done; a new process starts a new segment, so a
recovered segment is never written again.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import errno
import fcntl
import logging
import os
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from agentdeploy.errors import Unavailable

if TYPE_CHECKING:
    from agentdeploy.settings import Settings

__all__ = ["PayloadSpool", "SpoolRecord", "SpoolStats", "SpoolUnavailable", "SpoolSync", "MAGIC", "HEADER_SIZE"]

log = logging.getLogger(__name__)

SpoolSync = Literal["background", "always"]

MAGIC = b"\xffAS1"
_HEADER = struct.Struct("<4sII")  # magic, payload length, crc32(length bytes + payload)
HEADER_SIZE = _HEADER.size
_LENGTH = struct.Struct("<I")
MAX_RECORD_BYTES = 512 * 1024 * 1024  # a length above this is a damaged header, not a record
_SEGMENT_SUFFIX = ".seg"
_READ_WINDOW = 1024 * 1024
_REOPEN_BACKOFF_S = 0.5


class SpoolUnavailable(Unavailable):
    """The spool cannot take records (disk full, directory not writable): refuse the request."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retry_after=1.0)


@dataclass(slots=True)
class SpoolRecord:
    position: int  # offset of the frame's first byte
    end: int  # offset just past the frame: `acknowledge(end)` lets its segment go
    data: bytes


@dataclass(slots=True)
class SpoolStats:
    appended: int = 0
    appended_bytes: int = 0
    fsyncs: int = 0
    fsync_errors: int = 0
    refused: int = 0  # appends answered with SpoolUnavailable
    torn_tails: int = 0  # damaged regions reaching the end of a segment (a partial last write)
    corrupt_regions: int = 0  # damaged regions followed by a valid frame
    skipped_bytes: int = 0
    segments_deleted: int = 0


@dataclass(slots=True)
class _Segment:
    base: int
    path: Path
    end: int | None = None  # None while it is the active segment (its end is the spool's end)


@dataclass(frozen=True, slots=True)
class _Damage:
    start: int
    end: int
    tail: bool


def _frame_header(record: bytes) -> bytes:
    length = _LENGTH.pack(len(record))
    return _HEADER.pack(MAGIC, len(record), zlib.crc32(record, zlib.crc32(length)))


class PayloadSpool:
    """An append-only, checksummed, segmented local log. One per gateway process.

    Use from one event loop: `await start()`, `await append(data)`, `await close()`.
    `read()` and `acknowledge()` may be called from the writer's thread.
    """

    def __init__(
        self,
        directory: Path,
        *,
        sync: SpoolSync = "background",
        sync_interval_ms: int = 20,
        segment_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        if sync not in ("background", "always"):
            raise ValueError(f"spool sync must be 'background' or 'always', not {sync!r}")
        self.directory = Path(directory)
        self.sync: SpoolSync = sync
        self.sync_interval_s = max(sync_interval_ms, 1) / 1000.0
        self.segment_bytes = segment_bytes
        self.stats = SpoolStats()
        self.spool_id: str | None = None
        self._segments: list[_Segment] = []
        self._segments_lock = threading.Lock()
        self._fd: int | None = None  # the active segment, opened O_APPEND
        self._active_size = 0
        self._end = 0  # position of the next frame
        self._synced = 0  # everything before this position has been fsynced
        self._acked = 0
        self._damage_counted_upto = 0
        self._retired_fds: list[int] = []  # rolled-over segments still to fsync and close
        self._dir_dirty = False
        self._unavailable_reason: str | None = "spool not started"
        self._last_open_attempt = 0.0
        self._lock_fd: int | None = None
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()
        self._wake: asyncio.Event | None = None
        self._sync_task: asyncio.Task[None] | None = None
        self._closing = False
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> PayloadSpool:
        return cls(settings.spool_dir, sync=settings.spool_sync,
                   sync_interval_ms=settings.spool_sync_interval_ms)

    # Positions ---------------------------------------------------------------------------------
    @property
    def end(self) -> int:
        """Position just past the last appended record."""
        return self._end

    @property
    def synced(self) -> int:
        return self._synced

    @property
    def acknowledged(self) -> int:
        """Records that end at or before this position are committed downstream."""
        return self._acked

    @property
    def app_id(self) -> str | None:
        """The application transaction id the Delta writer records for this spool."""
        return f"agentdeploy-spool-{self.spool_id}" if self.spool_id else None

    @property
    def available(self) -> bool:
        return self._fd is not None

    # Life cycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Recover the segments on disk and open a new active segment.

        An unwritable directory does not raise: the spool starts unavailable (appends raise
        `SpoolUnavailable` and retry the directory) and its old records can still be read.
        Raises `SpoolUnavailable` only if another process holds this spool directory.
        """
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self._unavailable_reason = _describe(exc)
        self._take_lock()
        self._wake = asyncio.Event()
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="spool-fsync")
        self._load_state()
        self._try_open_active()
        self._sync_task = asyncio.get_running_loop().create_task(self._sync_loop(), name="spool-fsync")

    async def close(self) -> None:
        """fsync what was appended, close the files and release the directory."""
        if self._sync_task is not None:
            self._closing = True
            assert self._wake is not None
            self._wake.set()
            await self._sync_task
            self._sync_task = None
        for fd in self._retired_fds:
            _close_quietly(fd)
        self._retired_fds.clear()
        if self._fd is not None:
            _close_quietly(self._fd)
            self._fd = None
        self._unavailable_reason = "spool closed"
        self._fail_waiters("the spool was closed")
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        if self._lock_fd is not None:
            _close_quietly(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    async def __aenter__(self) -> PayloadSpool:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _take_lock(self) -> None:
        path = self.directory / "lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                return  # nothing to guard yet: the directory can't hold records either
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SpoolUnavailable(
                f"The spool directory {self.directory} is in use by another process; give each "
                "gateway its own AGENTDEPLOY_HOME (or spool directory)."
            ) from None
        self._lock_fd = fd

    def _load_state(self) -> None:
        id_path = self.directory / "spool-id"
        try:
            self.spool_id = id_path.read_text().strip() or None
        except OSError:
            self.spool_id = None
        try:
            self._acked = int((self.directory / "acknowledged").read_text().strip() or 0)
        except (OSError, ValueError):
            self._acked = 0
        segments = []
        try:
            names = sorted(p for p in self.directory.iterdir() if p.name.endswith(_SEGMENT_SUFFIX))
        except OSError:
            names = []
        for path in names:
            try:
                base = int(path.name[: -len(_SEGMENT_SUFFIX)])
                size = path.stat().st_size
            except (ValueError, OSError):
                log.warning("spool: ignoring unexpected file %s", path)
                continue
            segments.append(_Segment(base, path, base + size))
        with self._segments_lock:
            self._segments = segments
        last_end = segments[-1].end if segments else 0
        assert last_end is not None
        self._end = self._synced = max(last_end, self._acked)
        self._damage_counted_upto = self._acked

    def _try_open_active(self) -> bool:
        """Open a new active segment at the current end; on failure record why and return False."""
        self._last_open_attempt = time.monotonic()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            if self._lock_fd is None:
                self._take_lock()
            if self.spool_id is None:
                self.spool_id = uuid.uuid4().hex
                _write_atomically(self.directory / "spool-id", self.spool_id)
                self._dir_dirty = True
            base = self._end
            path = self.directory / f"{base:020d}{_SEGMENT_SUFFIX}"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError as exc:
            if self.spool_id is not None and not (self.directory / "spool-id").exists():
                self.spool_id = None
            self._unavailable_reason = _describe(exc)
            log.error("spool: cannot open a segment in %s: %s", self.directory, self._unavailable_reason)
            return False
        size = os.fstat(fd).st_size
        if size:  # a segment can only share our base if it is empty; anything else is foreign
            os.close(fd)
            self._unavailable_reason = f"segment {path.name} already holds data"
            return False
        with self._segments_lock:
            if self._segments and self._segments[-1].base == base:
                self._segments[-1].end = None  # the empty last segment becomes active again
            else:
                self._segments.append(_Segment(base, path, None))
        self._fd = fd
        self._active_size = 0
        self._dir_dirty = True
        self._unavailable_reason = None
        return True

    def _roll(self) -> None:
        """Seal the active segment and start the next one (which may fail: then unavailable)."""
        assert self._fd is not None
        self._seal(self._end)
        self._try_open_active()

    def _seal(self, end: int) -> None:
        assert self._fd is not None
        with self._segments_lock:
            self._segments[-1].end = end
        self._retired_fds.append(self._fd)  # the sync task fsyncs, then closes it
        self._fd = None
        self._end = end
        if self._wake is not None:
            self._wake.set()

    # Appending ---------------------------------------------------------------------------------
    async def append(self, record: bytes) -> int:
        """Write one record; returns its end position.

        Returns once the bytes are in the OS page cache (`sync="background"`) or on disk
        (`sync="always"`). Raises `SpoolUnavailable` if they could not be written.
        """
        if self._closing or self._wake is None:
            raise SpoolUnavailable("The payload spool is not running; retry shortly.")
        if len(record) > MAX_RECORD_BYTES:  # a reader would take such a frame for damage
            raise ValueError(f"a spool record holds at most {MAX_RECORD_BYTES} bytes, not {len(record)}")
        if self._fd is not None and self._active_size >= self.segment_bytes:
            self._roll()
        if self._fd is None:
            if time.monotonic() - self._last_open_attempt < _REOPEN_BACKOFF_S or not self._try_open_active():
                self.stats.refused += 1
                raise SpoolUnavailable(
                    f"Cannot log this request: the payload spool ({self.directory}) is not writable "
                    f"({self._unavailable_reason}). Free disk space or fix the directory; retry shortly."
                )
        assert self._fd is not None
        header = _frame_header(record)
        size = len(header) + len(record)
        try:
            written = os.writev(self._fd, (header, record))
            if written != size:  # a short write to a regular file means the disk just filled up
                raise OSError(errno.ENOSPC, f"short write ({written} of {size} bytes)")
        except OSError as exc:
            self._undo_partial_write(exc)
            self.stats.refused += 1
            raise SpoolUnavailable(
                f"Cannot log this request: writing to the payload spool failed ({_describe(exc)}). "
                "Free disk space; retry shortly."
            ) from None
        self._end += size
        self._active_size += size
        end = self._end
        self.stats.appended += 1
        self.stats.appended_bytes += size
        if self.sync == "always":
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append((end, future))
            self._wake.set()
            await future
        return end

    def _undo_partial_write(self, exc: OSError) -> None:
        """Cut a partial frame off the active segment so positions stay file offsets."""
        assert self._fd is not None
        self._unavailable_reason = _describe(exc)
        try:
            os.ftruncate(self._fd, self._active_size)
            return
        except OSError:
            pass
        try:  # could not cut it: seal the segment with the garbage inside (read() skips it)
            actual = os.fstat(self._fd).st_size
        except OSError:
            actual = self._active_size + 1
        base = self._end - self._active_size
        self._seal(max(base + actual, self._end))

    # Syncing -----------------------------------------------------------------------------------
    async def _sync_loop(self) -> None:
        assert self._wake is not None
        while not self._closing:
            if self.sync == "always":
                await self._wake.wait()
            else:
                try:
                    await asyncio.wait_for(self._wake.wait(), self.sync_interval_s)
                except TimeoutError:
                    pass
            self._wake.clear()
            await self._sync_once_guarded()
        await self._sync_once_guarded()

    async def _sync_once_guarded(self) -> None:
        try:
            await self._sync_once()
        except Exception:  # never let the task die: waiting appends would hang forever
            log.exception("spool: the fsync round failed")
            self._fail_waiters("the payload spool could not sync", upto=self._end)

    async def _sync_once(self) -> None:
        target = self._end
        retired = list(self._retired_fds)
        if target == self._synced and not retired and not self._dir_dirty:
            return
        dir_dirty, self._dir_dirty = self._dir_dirty, False
        fd = self._fd
        assert self._executor is not None
        try:
            await asyncio.get_running_loop().run_in_executor(
                self._executor, self._fsync, retired, fd, dir_dirty)
        except OSError as exc:
            self.stats.fsync_errors += 1
            log.error("spool: fsync failed: %s", _describe(exc))
            self._fail_waiters(f"fsync of the payload spool failed ({_describe(exc)})", upto=target)
            return
        finally:
            for old in retired:
                self._retired_fds.remove(old)
                _close_quietly(old)
        self.stats.fsyncs += 1
        self._synced = max(self._synced, target)
        while self._waiters and self._waiters[0][0] <= target:
            _, future = self._waiters.popleft()
            if not future.done():
                future.set_result(None)

    def _fsync(self, retired: list[int], fd: int | None, dir_dirty: bool) -> None:
        for old in retired:
            os.fsync(old)
        if fd is not None:
            os.fdatasync(fd)
        if dir_dirty:  # a new segment's directory entry must survive a power loss too
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def _fail_waiters(self, message: str, upto: int | None = None) -> None:
        while self._waiters and (upto is None or self._waiters[0][0] <= upto):
            _, future = self._waiters.popleft()
            if not future.done():
                future.set_exception(SpoolUnavailable(f"Cannot log this request: {message}."))

    # Reading and trimming ----------------------------------------------------------------------
    def read(self, position: int, *, max_records: int = 10_000,
             max_bytes: int = 32 * 1024 * 1024) -> tuple[list[SpoolRecord], int]:
        """Records from `position` on (at most `max_records`, about `max_bytes`) and the position
        to read next. Damaged regions are skipped (the returned position moves past them) and
        counted once in `stats`. Safe to call from a thread other than the event loop's."""
        end = self._end
        with self._segments_lock:
            segments = [(s.base, s.path, s.end) for s in self._segments]
        records: list[SpoolRecord] = []
        total = 0
        pos = position
        for base, path, seg_end in segments:
            stop = end if seg_end is None else seg_end
            if stop <= pos:
                continue
            pos = max(pos, base)
            with contextlib.closing(_scan_segment(path, base, pos, stop)) as frames:
                for item in frames:
                    if isinstance(item, _Damage):
                        self._count_damage(item)
                        pos = item.end
                        continue
                    records.append(item)
                    total += item.end - item.position
                    pos = item.end
                    if len(records) >= max_records or total >= max_bytes:
                        return records, pos
            pos = max(pos, stop)
        return records, pos

    def _count_damage(self, damage: _Damage) -> None:
        if damage.end <= self._damage_counted_upto:
            return
        self._damage_counted_upto = damage.end
        if damage.tail:
            self.stats.torn_tails += 1
        else:
            self.stats.corrupt_regions += 1
        self.stats.skipped_bytes += damage.end - damage.start
        log.warning("spool: skipped %d damaged bytes at position %d (%s)", damage.end - damage.start,
                    damage.start, "torn tail" if damage.tail else "corrupt record")

    def acknowledge(self, upto_position: int) -> None:
        """Everything ending at or before `upto_position` is committed downstream: remember that
        and delete the sealed segments that hold nothing newer. Never deletes the active segment."""
        if upto_position <= self._acked:
            return
        self._acked = upto_position
        try:
            _write_atomically(self.directory / "acknowledged", str(upto_position))
        except OSError as exc:  # advisory only: the Delta transaction version prevents duplicates
            log.warning("spool: cannot record the acknowledged position: %s", _describe(exc))
        with self._segments_lock:
            doomed = [s for s in self._segments if s.end is not None and s.end <= upto_position]
            self._segments = [s for s in self._segments if s not in doomed]
        for segment in doomed:
            try:
                segment.path.unlink()
                self.stats.segments_deleted += 1
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("spool: cannot delete %s: %s", segment.path, _describe(exc))

    def segment_paths(self) -> list[Path]:
        with self._segments_lock:
            return [s.path for s in self._segments]


def _scan_segment(path: Path, base: int, start: int, stop: int) -> Generator[SpoolRecord | _Damage]:
    """Frames of one segment file between positions `start` and `stop`, with damaged stretches
    reported as `_Damage` (re-synchronised on the next magic whose frame checks out)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        stop = min(stop, base + os.fstat(fd).st_size)
        buf = b""
        buf_at = start  # position of buf[0]

        def cover(at: int, n: int) -> bool:
            """Make buf hold [at, at + n); False if that reaches past `stop`."""
            nonlocal buf, buf_at
            if at + n > stop:
                return False
            if at >= buf_at and at + n <= buf_at + len(buf):
                return True
            if at < buf_at or at > buf_at + len(buf):
                buf, buf_at = b"", at
            else:
                buf, buf_at = buf[at - buf_at:], at
            want = min(stop, at + max(n, _READ_WINDOW)) - (buf_at + len(buf))
            if want > 0:
                buf += os.pread(fd, want, buf_at + len(buf) - base)
            return at + n <= buf_at + len(buf)

        pos = start
        damaged_from: int | None = None
        while pos < stop:
            record = None
            if cover(pos, HEADER_SIZE):
                magic, length, crc = _HEADER.unpack_from(buf, pos - buf_at)
                if magic == MAGIC and length <= MAX_RECORD_BYTES and cover(pos, HEADER_SIZE + length):
                    i = pos - buf_at
                    view = memoryview(buf)
                    check = zlib.crc32(view[i + HEADER_SIZE:i + HEADER_SIZE + length],
                                       zlib.crc32(view[i + 4:i + 8]))
                    if check == crc:
                        record = SpoolRecord(pos, pos + HEADER_SIZE + length,
                                             bytes(view[i + HEADER_SIZE:i + HEADER_SIZE + length]))
                    view.release()
            if record is not None:
                if damaged_from is not None:
                    yield _Damage(damaged_from, pos, tail=False)
                    damaged_from = None
                yield record
                pos = record.end
                continue
            if damaged_from is None:
                damaged_from = pos
            pos = pos + 1  # resync: the next magic at or after pos
            while pos < stop:
                cover(pos, min(len(MAGIC), stop - pos))
                found = buf.find(MAGIC, pos - buf_at)
                if found >= 0:
                    pos = buf_at + found
                    break
                pos = max(pos, buf_at + len(buf) - (len(MAGIC) - 1))
                if buf_at + len(buf) >= stop:
                    pos = stop
                    break
                cover(pos, min(_READ_WINDOW, stop - pos))
        if damaged_from is not None:
            yield _Damage(damaged_from, stop, tail=True)
    finally:
        os.close(fd)


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _describe(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0, "error")
    return f"{name}: {exc.strerror or exc}"
