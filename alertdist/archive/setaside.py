"""The messages a night's archive leaves out, kept beside it: rejects and duplicates whose bytes differ.

What the archive does not hold is not lost: every message of a programme topic that was rejected (on reading or
on decoding) or dropped as a duplicate with different bytes goes, byte for byte, into one tarball per programme,
``rejects/<YYYYMMDD>/programid=<N>/<survey>_<programme>_<YYYYMMDD>_rejects.tar.gz``: a member
``p<partition>-o<offset>.msg`` per message (the Kafka message value as it was read), in (partition, offset)
order, then ``index.json``, which lists every member with where it came from and why it was set aside. The
manifest records the file's size and checksums (``set_aside``), and `verify` checks them. Written only when
something was set aside (else an earlier run's file is deleted); members have mtime 0, so the same topic gives
the same bytes.
"""

from __future__ import annotations

import datetime as dt
import json

from alertdist.archive.storage import Destination
from alertdist.archive.stream import Spool
from alertdist.archive.tarball import TarballWriter
from alertdist.nights.dates import format_night

__all__ = ["INDEX_MEMBER", "rejects_path", "write_set_aside"]

INDEX_MEMBER = "index.json"


def rejects_path(survey: str, programme: str, night: dt.date, programid: int) -> str:
    """Where a programme's set-aside messages go, relative to the archive root."""
    label = format_night(night)
    return f"rejects/{label}/programid={programid}/{survey}_{programme}_{label}_rejects.tar.gz"


def member_name(partition: int, offset: int) -> str:
    return f"p{partition}-o{offset}.msg"


def write_set_aside(dest: Destination, path: str, spool: Spool) -> dict | None:
    """Write the spool's set-aside messages to ``path`` (atomically); their manifest entry, or None if there are
    none (then no file is written)."""
    dest.remove_stale_temporaries(path)
    if not spool.aside:
        dest.remove(path)  # an earlier run's, of messages this run did not set aside: not this archive's
        return None
    entries = sorted(spool.aside, key=lambda e: (e.partition, e.offset))
    index = []
    with dest.open_atomic(path, md5=False) as out:
        tarball = TarballWriter(out)
        for entry in entries:
            name = member_name(entry.partition, entry.offset)
            tarball.add(name, spool.read_aside(entry), 0)
            index.append(
                {"member": name, "partition": entry.partition, "offset": entry.offset, "size": entry.size}
                | {"reason": entry.reason}
            )
        tarball.add(INDEX_MEMBER, (json.dumps(index, indent=1) + "\n").encode(), 0)
        tarball.close()
    return {**vars(out.digest(path)), "members": len(entries)}
