"""Packet sources without Kafka: what each yields, in which order, and when a drop folder's night ends."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import threading
import time

import pytest

from alertdist.avro import codec
from alertdist.nights.dates import SITES, night_of_jd
from alertdist.publish.sources import (
    NIGHT_DONE,
    DropFolder,
    SourceError,
    SourcePacket,
    SourceSpec,
    folder_packets,
    paced,
    simulated_packets,
    tarball_packets,
)


def _write(folder, name, data, mtime=None):
    path = folder / name
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def test_tarball_is_streamed_member_by_member_with_its_bytes(uw_tarball, uw_tarball_members):
    items = list(tarball_packets(uw_tarball))
    assert [(i.name, i.packet) for i in items] == [(n.rsplit("/", 1)[-1], b) for n, b in uw_tarball_members]
    assert all(i.produced_ms is None and i.path is None for i in items)  # a member mtime is no production time


def test_a_tarball_that_is_not_one_fails_with_its_name(tmp_path):
    bogus = _write(tmp_path, "night.tar.gz", b"not a tarball at all")
    with pytest.raises(SourceError, match=r"night.tar.gz"):
        list(tarball_packets(bogus))


def test_folder_yields_only_complete_avro_files_in_name_order(tmp_path):
    _write(tmp_path, "2.avro", b"two")
    _write(tmp_path, "1.avro", b"one")
    _write(tmp_path, ".3.avro.tmp", b"half")
    _write(tmp_path, ".hidden.avro", b"dot")
    _write(tmp_path, "notes.txt", b"text")
    assert [(i.name, i.packet) for i in folder_packets(tmp_path)] == [("1.avro", b"one"), ("2.avro", b"two")]
    with pytest.raises(SourceError, match="does not exist"):
        list(folder_packets(tmp_path / "missing"))


def test_drop_folder_goes_oldest_first_and_ends_after_the_marker_once_drained(tmp_path):
    now = time.time()
    _write(tmp_path, "b.avro", b"B", now - 30)
    _write(tmp_path, "a.avro", b"A", now - 10)
    _write(tmp_path, ".c.avro.tmp", b"partial", now - 40)
    drop = DropFolder(tmp_path)
    seen = []
    for item in drop:
        if item is None:  # idle: the pipeline writes one more file, then says the night is over
            if not (tmp_path / "c.avro").exists():
                os.replace(tmp_path / ".c.avro.tmp", tmp_path / "c.avro")
                (tmp_path / NIGHT_DONE).touch()
            continue
        seen.append(item)
        assert item.produced_ms == pytest.approx(item.path.stat().st_mtime * 1000, abs=1)
    assert [i.name for i in seen] == ["b.avro", "a.avro", "c.avro"]
    assert [i.packet for i in seen] == [b"B", b"A", b"partial"]
    # nothing is removed until Kafka acknowledged it
    assert sorted(p.name for p in tmp_path.glob("*.avro")) == ["a.avro", "b.avro", "c.avro"]


def test_drop_folder_never_yields_an_unsettled_file_twice_and_settles_as_told(tmp_path):
    for name in ("1.avro", "2.avro", "3.avro"):
        _write(tmp_path, name, name.encode())
    (tmp_path / NIGHT_DONE).touch()
    done = tmp_path / "done"
    drop = DropFolder(tmp_path, done_folder=done)
    items = [i for i in drop if i is not None]
    assert [i.name for i in items] == ["1.avro", "2.avro", "3.avro"]  # one pass: in-flight files are not re-read
    drop.settle(items[0], rejected=False)
    drop.settle(items[1], rejected=True)
    assert (done / "1.avro").read_bytes() == b"1.avro"
    assert (tmp_path / "rejected" / "2.avro").read_bytes() == b"2.avro"
    assert (tmp_path / "3.avro").exists()  # never acknowledged: still there for the next run
    assert [i.name for i in DropFolder(tmp_path) if i is not None] == ["3.avro"]
    drop.retire_marker(dt.date(2023, 10, 12))
    assert not (tmp_path / NIGHT_DONE).exists() and (tmp_path / f"{NIGHT_DONE}.20231012").exists()


def test_a_stopped_drop_folder_ends_at_once_and_leaves_its_files(tmp_path):
    _write(tmp_path, "1.avro", b"1")
    stop = threading.Event()
    drop = DropFolder(tmp_path, stop=stop)
    first = next(iter(drop))
    stop.set()
    assert first.name == "1.avro" and list(drop) == []
    assert (tmp_path / "1.avro").exists()


def test_simulated_packets_belong_to_the_night_they_are_published_for():
    night = dt.date(2023, 10, 12)
    items = list(simulated_packets(30, night=night, seed=3))
    infos = [codec.peek(i.packet) for i in items]
    assert len(items) == 30 and [i.name for i in items] == [f"{x.candid}.avro" for x in infos]
    assert {night_of_jd(x.jd, SITES["palomar"]) for x in infos} == {night}
    assert [i.packet for i in simulated_packets(30, night=night, seed=3)] == [i.packet for i in items]


def test_paced_releases_evenly_and_stamps_the_scheduled_time():
    items = [SourcePacket(str(i), b"x", None) for i in range(7)]
    start = time.time() * 1000
    out, released = [], []
    for item in paced(items, rate_per_minute=6000):  # one every 10 ms
        out.append(item)
        released.append(time.time() * 1000)
        time.sleep(0.02 if len(out) == 2 else 0)  # a slow consumer falls behind: the schedule does not move
    assert [i.name for i in out] == [str(i) for i in range(7)]
    assert all(9 <= b.produced_ms - a.produced_ms <= 11 for a, b in itertools.pairwise(out))
    assert abs(out[0].produced_ms - start) < 5
    assert all(r >= p - 1 for r, p in zip(released, (i.produced_ms for i in out)))  # never released early


def test_source_specs_name_their_kind(tmp_path):
    night = dt.date(2023, 10, 12)
    assert isinstance(SourceSpec.parse(str(tmp_path)).open(night), DropFolder)
    _write(tmp_path, "1.avro", b"1")
    assert [i.name for i in SourceSpec.parse(f"folder:{tmp_path}").open(night)] == ["1.avro"]
    assert len(list(SourceSpec.parse("simulate:5:1").open(night))) == 5
    with pytest.raises(SourceError, match="simulate:N"):
        SourceSpec.parse("simulate:many")


# --------------------------------------------------------------------------- hostile input (issue 23, item 2)


def _tarball(path, members, gzipped=True):
    """A tarball of ``members``: (name, bytes) pairs, or (name, size, None) for a member of that many zeros streamed
    in (never held in memory here either)."""
    import io
    import tarfile

    from isal import igzip

    with open(path, "wb") as raw:
        out = igzip.IGzipFile(fileobj=raw, mode="wb", compresslevel=1) if gzipped else raw
        with tarfile.open(fileobj=out, mode="w|") as tar:
            for name, *rest in members:
                info = tarfile.TarInfo(name)
                if rest[-1] is None:
                    info.size = rest[0]
                    tar.addfile(info, _Zeros(info.size))
                else:
                    info.size = len(rest[0])
                    tar.addfile(info, io.BytesIO(rest[0]))
        if gzipped:
            out.close()
    return path


class _Zeros:
    def __init__(self, size):
        self.left = size

    def read(self, n=-1):
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return bytes(n)


def test_a_compressed_bomb_member_is_set_aside_unread_in_bounded_memory(tmp_path, archive_2018_members):
    import tracemalloc

    name, packet = archive_2018_members[0]
    bomb = _tarball(tmp_path / "bomb.tar.gz", [("bomb.avro", 200 * 1024 * 1024, None), (name, packet)])
    assert bomb.stat().st_size < 2 * 1024 * 1024  # 200 MB of member in under 2 MB of file
    tracemalloc.start()
    try:
        items = list(tarball_packets(bomb, max_bytes=1024 * 1024))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 24 * 1024 * 1024, f"{peak / 1e6:.0f} MB held while streaming a 200 MB member"
    assert [i.name for i in items] == ["bomb.avro", name.rsplit("/", 1)[-1]]
    assert items[0].problem.startswith("oversize: member bomb.avro is 209715200 bytes")
    assert items[0].size == 200 * 1024 * 1024 and len(items[0].packet) <= 1024 * 1024
    assert items[1].problem is None and items[1].packet == packet


def test_tar_members_that_are_not_packets_are_yielded_with_their_reason(tmp_path, archive_2018_members):
    _, packet = archive_2018_members[0]
    tarball = _tarball(tmp_path / "t.tar.gz", [("README", b"read me"), ("123", packet), (".x.avro", packet)])
    items = list(tarball_packets(tarball))
    assert [(i.name, i.problem.split(":")[0]) for i in items] == [
        ("README", "not-a-packet"),
        ("123", "not-a-packet"),
        (".x.avro", "not-a-packet"),
    ]
    assert items[0].packet == b"read me"  # small: kept whole for the rejected topic


def test_a_tarball_with_no_member_is_an_error_not_an_empty_night(tmp_path):
    empty = _tarball(tmp_path / "empty.tar.gz", [])
    with pytest.raises(SourceError, match="no member"):
        list(SourceSpec.parse(str(empty)).open(dt.date(2023, 10, 12)))


def test_a_file_over_the_limit_is_set_aside_with_only_its_head_read(tmp_path):
    _write(tmp_path, "1.avro", b"x" * 3_000_000)
    _write(tmp_path, "2.avro", b"small")
    (tmp_path / NIGHT_DONE).touch()
    for source in (folder_packets(tmp_path, max_bytes=1_000_000), DropFolder(tmp_path, max_bytes=1_000_000)):
        big, small = [i for i in source if i is not None]
        assert big.problem.startswith("oversize: 1.avro is 3000000 bytes") and big.size == 3_000_000
        assert len(big.packet) <= 1024 * 1024 and small.problem is None and small.packet == b"small"


def test_the_drop_folder_follows_no_link_out_of_itself(tmp_path):
    drop, outside = tmp_path / "drop", tmp_path / "outside"
    drop.mkdir()
    outside.mkdir()
    secret = _write(outside, "secret.txt", b"root:x:0:0")
    _write(drop, "inside.avro", b"in")
    os.symlink(secret, drop / "escape.avro")
    os.symlink("/etc/passwd", drop / "passwd.avro")
    os.symlink(drop / "inside.avro", drop / "alias.avro")  # a link within the folder is read
    (drop / NIGHT_DONE).touch()
    items = {i.name: i for i in DropFolder(drop) if i is not None}
    assert set(items) == {"inside.avro", "escape.avro", "passwd.avro", "alias.avro"}
    for name in ("escape.avro", "passwd.avro"):
        assert items[name].problem.startswith("outside-folder: ") and items[name].packet == b""
    assert items["alias.avro"].packet == b"in" and items["alias.avro"].problem is None
    assert next(i.problem for i in folder_packets(drop) if i.name == "escape.avro").startswith("outside-folder")
    DropFolder(drop).settle(items["escape.avro"], rejected=True)  # the link is set aside, its target untouched
    assert (drop / "rejected" / "escape.avro").is_symlink() and secret.read_bytes() == b"root:x:0:0"


def test_a_fifo_named_like_a_packet_is_refused_not_waited_on(tmp_path):
    os.mkfifo(tmp_path / "pipe.avro")
    (tmp_path / NIGHT_DONE).touch()
    [item] = [i for i in DropFolder(tmp_path) if i is not None]
    assert item.problem.startswith("not-a-packet: pipe.avro is not a regular file")


def test_a_file_name_that_is_not_utf8_is_escaped_for_headers_and_logs(tmp_path):
    from alertdist.publish.sources import safe_text

    os.close(os.open(os.path.join(os.fsencode(tmp_path), b"\xff\xfe.avro"), os.O_CREAT | os.O_WRONLY))
    [item] = list(folder_packets(tmp_path))
    with pytest.raises(UnicodeEncodeError):
        item.name.encode()
    assert safe_text(item.name) == "\\udcff\\udcfe.avro" and safe_text("a\nb") == "a\\nb"
    assert safe_text("ZTF23abc.avro") == "ZTF23abc.avro"


def test_a_socket_or_an_unreadable_file_is_set_aside_not_a_reason_to_stop(tmp_path):
    import socket

    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tmp_path / "sock.avro"))
    locked = _write(tmp_path, "locked.avro", b"secret")
    locked.chmod(0)
    (tmp_path / NIGHT_DONE).touch()
    try:
        items = {i.name: i for i in DropFolder(tmp_path) if i is not None}
    finally:
        server.close()
        locked.chmod(0o600)
    assert items["sock.avro"].problem.startswith("not-a-packet: sock.avro is not a regular file")
    if os.geteuid() != 0:  # root reads any file
        assert items["locked.avro"].problem.startswith("not-a-packet: locked.avro cannot be read")


def test_a_rejected_folder_that_is_a_link_out_is_not_followed(tmp_path):
    drop, elsewhere = tmp_path / "drop", tmp_path / "elsewhere"
    drop.mkdir()
    elsewhere.mkdir()
    os.symlink(elsewhere, drop / "rejected")
    _write(drop, "bad.avro", b"junk")
    (drop / NIGHT_DONE).touch()
    folder = DropFolder(drop)
    [item] = [i for i in folder if i is not None]
    folder.settle(item, rejected=True)
    assert folder.settle_errors == 1 and (drop / "bad.avro").exists() and list(elsewhere.iterdir()) == []


def test_a_compressed_bomb_in_a_tar_header_stops_the_read_with_a_clear_error_in_bounded_memory(tmp_path):
    import tarfile
    import tracemalloc

    from isal import igzip

    bomb = tmp_path / "header-bomb.tar.gz"
    with (
        open(bomb, "wb") as raw,
        igzip.IGzipFile(fileobj=raw, mode="wb", compresslevel=1) as gz,
        tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as tar,
    ):
        info = tarfile.TarInfo("1.avro")
        info.pax_headers = {"comment": "x" * (8 * 1024 * 1024)}  # one 8 MB PAX record, a few KB zipped
        tar.addfile(info, None)
    tracemalloc.start()
    try:
        with pytest.raises(SourceError, match=r"extended tar header of .* bytes"):
            list(tarball_packets(bomb))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 6 * 1024 * 1024, f"{peak / 1e6:.0f} MB held for an 8 MB header"


def test_the_batch_filter_takes_any_packet_source_with_what_its_reading_found(tmp_path):
    """One seam: a folder opened as the publisher opens it goes to `run_batch` as it is, names and problems kept."""
    from alertdist.filters.batch import run_batch

    night = dt.date(2023, 10, 12)
    packets = [item.packet for item in simulated_packets(3, night=night, seed=2)]
    for i, packet in enumerate(packets):
        _write(tmp_path, f"{i}.avro", packet)
    limit = max(map(len, packets)) + 100
    _write(tmp_path, "big.avro", b"x" * (limit + 1))
    result = run_batch("bright_transients", SourceSpec("folder", str(tmp_path)).open(night, max_packet_bytes=limit))
    assert (result.read, result.malformed) == (4, 1)
    [(name, outcome, reason)] = result.problems
    assert (name, outcome) == ("big.avro", "malformed") and f"oversize: big.avro is {limit + 1} bytes" in reason
