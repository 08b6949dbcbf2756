"""The payload spool: replay, damage handling, refusal when it cannot write, group commit, trimming."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentdeploy.tables.spool import HEADER_SIZE, PayloadSpool, SpoolRecord, SpoolUnavailable
from tests.harness import REPO


def records(n: int, size: int = 100) -> list[bytes]:
    return [f"record-{i:05d}-".encode().ljust(size, b"x") for i in range(n)]


async def fill(directory: Path, data: list[bytes], **options: object) -> list[int]:
    async with PayloadSpool(directory, **options) as spool:  # type: ignore[arg-type]
        return [await spool.append(d) for d in data]


def read_all(spool: PayloadSpool, start: int = 0) -> list[SpoolRecord]:
    out, pos = [], start
    while True:
        batch, pos = spool.read(pos, max_records=7)
        if not batch:
            return out
        out.extend(batch)


def test_append_then_replay_in_a_new_process_returns_every_record_in_order(tmp_path: Path) -> None:
    data = records(50)
    ends = asyncio.run(fill(tmp_path, data, segment_bytes=1500))

    async def reopen() -> None:
        async with PayloadSpool(tmp_path, segment_bytes=1500) as spool:
            replayed = read_all(spool)
            assert [r.data for r in replayed] == data
            assert [r.end for r in replayed] == ends
            assert spool.end >= ends[-1]
            # Positions keep growing after a restart: a new record lands after the old ones.
            new_end = await spool.append(b"after-restart")
            assert new_end > ends[-1]
            assert read_all(spool, ends[-1])[0].data == b"after-restart"
            assert spool.stats.torn_tails == spool.stats.corrupt_regions == 0

    asyncio.run(reopen())


def last_segment(directory: Path) -> Path:
    return sorted(p for p in directory.iterdir() if p.suffix == ".seg" and p.stat().st_size)[-1]


def test_torn_last_record_is_skipped_counted_and_never_blocks_a_restart(tmp_path: Path) -> None:
    data = records(10)
    asyncio.run(fill(tmp_path, data))
    segment = last_segment(tmp_path)
    os.truncate(segment, segment.stat().st_size - 30)  # the last write was cut short by a crash

    async def reopen_twice() -> None:
        for restart in range(2):  # a second restart must behave the same: no crash loop
            async with PayloadSpool(tmp_path) as spool:
                replayed = read_all(spool)
                assert [r.data for r in replayed] == data[:9] + [b"still-works"] * restart
                assert spool.stats.torn_tails == 1
                assert spool.stats.skipped_bytes == HEADER_SIZE + 100 - 30
                end = await spool.append(b"still-works")
                assert read_all(spool, replayed[-1].end)[-1].data == b"still-works"
                assert end == spool.end

    asyncio.run(reopen_twice())


@pytest.mark.parametrize("damage", ["payload-byte", "length-field", "magic"])
def test_corrupt_middle_record_is_skipped_and_the_rest_is_read(tmp_path: Path, damage: str) -> None:
    data = records(10)
    ends = asyncio.run(fill(tmp_path, data))
    segment = last_segment(tmp_path)
    raw = bytearray(segment.read_bytes())
    start = ends[4]  # record 5 starts where record 4 ends (one segment, based at 0)
    if damage == "payload-byte":
        raw[start + HEADER_SIZE + 10] ^= 0x01
    elif damage == "length-field":
        raw[start + 4:start + 8] = (2**31).to_bytes(4, "little")  # claims far more than the file
    else:
        raw[start] = 0x00
    segment.write_bytes(bytes(raw))

    async def reopen() -> None:
        async with PayloadSpool(tmp_path) as spool:
            replayed = read_all(spool)
            assert [r.data for r in replayed] == data[:5] + data[6:]
            assert spool.stats.corrupt_regions == 1
            assert spool.stats.torn_tails == 0
            assert spool.stats.skipped_bytes == HEADER_SIZE + 100

    asyncio.run(reopen())


@pytest.fixture()
def read_only_dir(tmp_path: Path) -> Iterator[tuple[Path, object]]:
    """A directory this process cannot create files in (chattr +i when running as root)."""
    directory = tmp_path / "spool"
    directory.mkdir()
    if os.geteuid() == 0:
        if not shutil.which("chattr") or subprocess.run(["chattr", "+i", str(directory)]).returncode:
            pytest.skip("running as root without chattr: cannot make a directory read-only")

        def undo() -> None:
            subprocess.run(["chattr", "-i", str(directory)], check=True)
    else:
        directory.chmod(0o555)

        def undo() -> None:
            directory.chmod(0o755)
    try:
        yield directory, undo
    finally:
        undo()


def test_read_only_directory_refuses_appends_with_503_then_recovers(
        read_only_dir: tuple[Path, object]) -> None:
    directory, make_writable = read_only_dir

    async def run() -> None:
        spool = PayloadSpool(directory)
        await spool.start()  # the server still starts: it answers 503 instead of crashing
        try:
            assert not spool.available
            with pytest.raises(SpoolUnavailable) as info:
                await spool.append(b"request-1")
            assert info.value.status_code == 503
            assert str(directory) in info.value.message
            assert spool.stats.refused == 1 and spool.end == 0
            make_writable()  # type: ignore[operator]
            await asyncio.sleep(0.6)  # appends retry the directory at most every 0.5 s
            end = await spool.append(b"request-2")
            assert [r.data for r in read_all(spool)] == [b"request-2"] and end == spool.end
        finally:
            await spool.close()

    asyncio.run(run())


FULL_DISK_CHILD = textwrap.dedent("""
    import asyncio, resource, signal, sys
    from pathlib import Path
    from agentdeploy.tables.spool import PayloadSpool, SpoolUnavailable
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead

    async def main():
        spool = PayloadSpool(Path(sys.argv[1]))
        await spool.start()
        limit = 10_000  # the "disk" fills up inside the 40th or so record
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
        ok = 0
        for i in range(1000):
            try:
                await spool.append(b"r" * 250)
                ok += 1
            except SpoolUnavailable as exc:
                print(ok, exc.status_code, flush=True)
                break
        await spool.close()
    asyncio.run(main())
""")


def test_full_disk_refuses_the_append_and_leaves_no_partial_record(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", FULL_DISK_CHILD, str(tmp_path)], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    accepted, status = map(int, out.stdout.split())
    assert status == 503 and 0 < accepted < 1000

    async def reopen() -> None:
        async with PayloadSpool(tmp_path) as spool:
            assert len(read_all(spool)) == accepted  # every accepted record, nothing more
            assert spool.stats.torn_tails == 0  # the partial frame was cut off at once

    asyncio.run(reopen())


def test_sync_always_waits_for_fsync_and_groups_concurrent_appends(tmp_path: Path) -> None:
    async def run() -> None:
        async with PayloadSpool(tmp_path, sync="always") as spool:
            async def one(data: bytes) -> None:
                end = await spool.append(data)
                assert spool.synced >= end  # the append returned only after its fsync

            data = records(400)
            for start in range(0, 400, 100):  # 32 concurrent appenders, several waves
                await asyncio.gather(*(one(d) for d in data[start:start + 100]))
            assert spool.stats.appended == 400
            assert 0 < spool.stats.fsyncs < 400 / 4, spool.stats  # one fsync covered many records

    asyncio.run(run())


def test_background_sync_returns_before_fsync_and_syncs_within_the_interval(tmp_path: Path) -> None:
    async def run() -> None:
        async with PayloadSpool(tmp_path, sync="background", sync_interval_ms=20) as spool:
            await asyncio.sleep(0.05)
            fsyncs = spool.stats.fsyncs
            started = time.perf_counter()
            ends = [await spool.append(d) for d in records(100)]
            assert time.perf_counter() - started < 0.1
            assert spool.synced < ends[-1] and spool.stats.fsyncs == fsyncs  # nothing waited
            deadline = time.monotonic() + 1.0
            while spool.synced < ends[-1] and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            assert spool.synced == ends[-1]
            assert spool.stats.fsyncs - fsyncs <= 3

    asyncio.run(run())


def test_segments_are_deleted_only_after_acknowledge(tmp_path: Path) -> None:
    data = records(100)

    async def run() -> None:
        async with PayloadSpool(tmp_path, segment_bytes=1000) as spool:
            ends = [await spool.append(d) for d in data]
            segments = spool.segment_paths()
            assert len(segments) >= 10
            await asyncio.sleep(0.05)
            assert all(p.exists() for p in segments)  # nothing goes before its commit
            spool.acknowledge(ends[49])
            gone = [p for p in segments if not p.exists()]
            kept = spool.segment_paths()
            assert gone and kept and spool.stats.segments_deleted == len(gone)
            # What is left starts at or before record 50: nothing unacknowledged was deleted.
            assert int(kept[0].stem) <= ends[49]
            assert [r.data for r in read_all(spool, spool.acknowledged)] == data[50:]
            spool.acknowledge(spool.end)
            assert spool.segment_paths()[-1].exists()  # the active segment stays

    asyncio.run(run())

    async def reopen() -> None:
        async with PayloadSpool(tmp_path, segment_bytes=1000) as spool:
            assert read_all(spool, spool.acknowledged) == []  # the acknowledged position persisted

    asyncio.run(reopen())


def test_a_second_spool_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    async def run() -> None:
        async with PayloadSpool(tmp_path):
            with pytest.raises(SpoolUnavailable, match="in use by another process"):
                await PayloadSpool(tmp_path).start()

    asyncio.run(run())
