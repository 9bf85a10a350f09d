"""An adversarial night: >10,000 hostile packets in one night's tarball, through every stage, and the night balances.

The night's source is a gzip'd tarball holding a small simulated night (its packets stripped of history and
cutouts, so the test stays fast) and, mixed in, every kind of bad input we know: the fuzz cases of
bench/fuzz_cases.py (truncations, bit flips, spliced junk, impossible lengths, wrong schemas, random bytes), valid
packets with implausible values (NaN and 1e300 jd, negative candid, objectIds with newlines), packets damaged past
their candidate (they pass the publisher's cheap check and must be caught later), oversize members, a member
that decompresses to 128 MB, members that are not packets (a README, links), odd member names (not UTF-8,
newlines, 240 characters) and duplicates. The stages run as the jobs run them: the publisher, the three bundled
filters live (at the same time), then the archiver. No stage may fail, and the counts must reconcile.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import random
import tarfile
import threading
import time

import pytest
from isal import igzip

from alertdist.avro import codec
from alertdist.jobs.archive import archive_night
from alertdist.jobs.filters import run_filter
from alertdist.jobs.nights import open_night
from alertdist.jobs.publish import publish_night
from alertdist.nights.report import reconcile
from alertdist.nights.topics import TopicSettings
from alertdist.publish.publisher import HEADER_REASON, HEADER_SOURCE, REJECT_KINDS
from alertdist.publish.sources import SourceSpec, simulated_packets
from alertdist.settings import Settings
from bench import fuzz_cases as fc
from tests.test_fuzz import _read_topics

NIGHT = dt.date(2023, 10, 12)
FILTERS = ("bright_transients", "solar_system", "variable_stars")
GOOD = 300
RANDOM_MUTANTS = 10_000
MAX_PACKET_BYTES = 256 * 1024
BOMB_BYTES = 128 * 1024 * 1024


def _small(packet: bytes) -> bytes:
    """The packet without its cutouts and most of its history: the same alert, a third of the bytes."""
    record = codec.decode(packet)
    record["prv_candidates"], record["fp_hists"] = record["prv_candidates"][:2], None
    for cutout in ("cutoutScience", "cutoutTemplate", "cutoutDifference"):
        record[cutout] = None
    return codec.encode(record, record["schemavsn"])


class _Zeros(io.RawIOBase):
    def __init__(self, size: int):
        self.left = size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return bytes(n)


class _Night:
    """The members of the hostile night's tarball, and what must become of them."""

    def __init__(self, seed: int = 23):
        rng = random.Random(seed)
        full = [p.packet for p in simulated_packets(GOOD, night=NIGHT, seed=seed)]
        self.good = [_small(packet) for packet in full]
        self.members: list[tuple[str, bytes | int]] = []  # name -> bytes, or a size of zeros (the bomb)
        self.must_refuse: dict[str, str] = {}  # member name -> the reject kind the publisher must give it
        self.may_pass: set[str] = set()  # names the publisher may deliver (later stages must cope with them)
        for i, packet in enumerate(self.good):
            self.add(f"night/{i:05d}.avro", packet)
        for i in range(20):  # sent twice by the pipeline: the archive keeps one
            self.add(f"night/again-{i:03d}.avro", self.good[i])
        for i in range(RANDOM_MUTANTS):
            mutant = fc.random_mutant(rng.choice(self.good), rng)
            name = f"fuzz/{i:05d}-{mutant.kind}.avro"
            self.add(name, mutant.packet, "malformed" if mutant.peek_must_fail else None)
        for i, which in enumerate(sorted(fc.IMPLAUSIBLE) * 5):
            kind = "unknown-programid" if which.startswith("programid") else "implausible"  # routed by programme
            self.add(f"implausible/{i:03d}-{which}.avro", fc.implausible(self.good[i], which).packet, kind)
        for i in range(30):  # sound up to the candidate, broken after it: only a full decode (the archiver) sees it
            alert = codec.decode(self.good[50 + i])
            alert["candid"] = 10**18 + i  # an alert of its own, not a duplicate the archive would drop unread
            renamed = codec.encode(alert, alert["schemavsn"])
            broken = fc.crafted_body_length(renamed, "prv_candidates-count", 1 << 60)
            self.add(f"past-candidate/{i:02d}.avro", broken.packet, None)
        for i in range(3):
            self.add(f"oversize/{i}.avro", fc.oversized(full[i], MAX_PACKET_BYTES + 1000).packet, "oversize")
        self.add("bomb/zeros.avro", BOMB_BYTES, "oversize")
        for i, name in enumerate(fc.ODD_NAMES):
            self.add("odd/" + os.fsdecode(name), rng.randbytes(100 + i), "malformed")
        self.add("odd/" + os.fsdecode(b"good-\xff.avro"), self.good[-1], None)  # a good packet, an odd name
        self.add("README", b"ZTF public alerts, night 20231012\n", "not-a-packet")
        self.add("night/MD5SUMS", b"0" * 32 + b"  00000.avro\n", "not-a-packet")
        self.add("night/00001.avro.tmp", self.good[1], "not-a-packet")

    def add(self, name: str, data: bytes | int, refused: str | None = None) -> None:
        self.members.append((name, data))
        if refused:
            self.must_refuse[name] = refused
        else:
            self.may_pass.add(name)

    def write(self, path) -> int:
        """Write the tarball (GNU format: names as raw bytes); the number of members the publisher will read."""
        with (
            open(path, "wb") as raw,
            igzip.IGzipFile(fileobj=raw, mode="wb", compresslevel=1) as gz,
            tarfile.open(fileobj=gz, mode="w|", format=tarfile.GNU_FORMAT) as tar,
        ):
            folder = tarfile.TarInfo("night")
            folder.type = tarfile.DIRTYPE
            tar.addfile(folder)  # a folder: structure, not a member to count
            for name, data in self.members:
                info = tarfile.TarInfo(name)
                info.size = data if isinstance(data, int) else len(data)
                tar.addfile(info, _Zeros(data) if isinstance(data, int) else io.BytesIO(data))
            for name, kind in (("links/passwd.avro", tarfile.SYMTYPE), ("links/hard.avro", tarfile.LNKTYPE)):
                info = tarfile.TarInfo(name)
                info.type, info.linkname = kind, "/etc/passwd"
                tar.addfile(info)
                self.must_refuse[name] = "not-a-packet"
            tar.members.clear()
        return len(self.members) + 2


@pytest.fixture
def hostile_night(tmp_path):
    night = _Night()
    tarball = tmp_path / "ztf_public_20231012.tar.gz"
    members = night.write(tarball)
    assert members >= RANDOM_MUTANTS + GOOD
    return night, tarball, members


def test_an_adversarial_night_closes_filters_archives_and_reconciles(kafka_bootstrap, unique, tmp_path, hostile_night):
    night, tarball, members = hostile_night
    settings = Settings.load(
        home=tmp_path / "home",
        bootstrap_servers=kafka_bootstrap,
        survey=f"adv{unique}",
        archive_url=str(tmp_path / "archive"),
    )
    open_night(settings, NIGHT, TopicSettings(partitions=2))
    started = time.monotonic()

    reports, failures = {}, {}

    def run(name: str) -> None:
        try:
            reports[name] = run_filter(settings, name, NIGHT)
        except BaseException as e:  # reported below: a filter failing is what this test must not see
            failures[name] = e

    filters = [threading.Thread(target=run, args=(name,), daemon=True) for name in FILTERS]
    for thread in filters:
        thread.start()
    result = publish_night(
        settings, NIGHT, SourceSpec("tarball", str(tarball)), topics=None, max_packet_bytes=MAX_PACKET_BYTES
    )
    published_s = time.monotonic() - started
    for thread in filters:
        thread.join(timeout=300)
    assert not failures, failures
    assert set(reports) == set(FILTERS), "a filter did not finish after the night closed"
    manifest = archive_night(settings, NIGHT)
    print(
        f"\n{members} members: published in {published_s:.0f} s, filtered and archived after "
        f"{time.monotonic() - started:.0f} s; rejected {dict(sorted(result.rejected.items()))}; "
        f"delivered {result.delivered_total}; archive {[a.counts for a in manifest.programmes.values()]}"
    )

    # the publisher: every member read is delivered or set aside with its reason, and the night is closed
    assert result.closed and result.failed == 0
    assert result.read == members == result.delivered_total + result.rejected_total
    assert {"malformed", "implausible", "oversize", "not-a-packet"} <= set(result.rejected)
    assert result.delivered_total >= GOOD + 20 + 1  # every good packet, its duplicates, the oddly named one
    rejected = {}
    for message in _read_topics(kafka_bootstrap, [settings.naming.rejected_topic(NIGHT)]):
        headers = dict(message.headers())
        rejected[headers[HEADER_SOURCE].decode()] = headers[HEADER_REASON].decode()
    assert len(rejected) == result.rejected_total  # one message each, names unique and readable
    for name, reason in rejected.items():
        assert reason.split(":", 1)[0] in REJECT_KINDS and len(reason) > 20 and "\n" not in reason, (name, reason)
    shown = {_shown(name, kind): kind for name, kind in night.must_refuse.items()}
    for name, kind in shown.items():
        assert name in rejected, f"{name!r} should have been set aside ({kind})"
        if kind != "malformed":  # a fuzzed packet may be refused for more than one reason
            assert rejected[name].startswith(f"{kind}: "), (name, rejected[name])
    assert set(rejected) <= set(shown) | {_shown(n, None) for n in night.may_pass}

    # the filters: each read every delivered alert, settled each one, and consumed the whole night
    rows = {name: [{"copy": r.copy_index, **r.counts()}] for name, r in reports.items()}
    for name, r in reports.items():
        assert r.read == result.delivered_total and r.lag == 0, (name, r)

    # the archive: what was delivered is archived, less duplicates and what the archiver set aside, with reasons
    per_programme = {p: a.counts for p, a in manifest.programmes.items()}
    published = {**result.counts(), "closed": result.closed}
    assert reconcile(published, rows, per_programme) == []
    for programid, archived in manifest.programmes.items():
        counts = archived.counts
        assert counts["read"] == result.delivered.get(programid, 0)
        assert counts["written"] == counts["read"] - counts["duplicates"] - counts["rejected"]
        assert len(archived.rejected) == counts["rejected"] and all(len(r["reason"]) > 10 for r in archived.rejected)
    duplicates = sum(c["duplicates"] for c in per_programme.values())
    archive_rejected = sum(c["rejected"] for c in per_programme.values())
    assert duplicates >= 20 and archive_rejected >= 30  # the resent goods; the packets broken past the candidate
    written = sum(c["written"] for c in per_programme.values())
    assert written == result.delivered_total - duplicates - archive_rejected >= GOOD


def _shown(member: str, kind: str | None) -> str:
    """How the publisher names a member in its rejection: the whole name of what is not a packet file, else the
    base name; escaped where it is not printable UTF-8."""
    from alertdist.publish.sources import safe_text

    return safe_text(member if kind == "not-a-packet" else member.rsplit("/", 1)[-1])
