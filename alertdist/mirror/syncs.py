"""MirrorMaker 2's offset syncs: which downstream offset each upstream offset became, and the mirror's lag.

MirrorMaker writes them to ``mm2-offset-syncs.<target>.internal`` on the source cluster, keyed by the upstream
topic and partition (Kafka's Struct encoding: an int16-prefixed UTF-8 topic, an int32 partition; the value two
int64: upstream offset, downstream offset). It writes one every ``offset.lag.max`` records and, after each
transaction commits, one for the last record it wrote: so once a partition's last upstream record has a sync,
that record, and every one before it, is committed downstream.
"""

from __future__ import annotations

import struct

from alertdist.kafka.reading import latest_by_key
from alertdist.nights.topics import MirrorNames

__all__ = ["OffsetSyncs", "mirror_lag", "next_unmirrored", "read_offset_syncs"]

#: (topic, partition) -> (upstream offset, downstream offset) of its latest sync.
OffsetSyncs = dict[tuple[str, int], tuple[int, int]]


def _parse(key: bytes, value: bytes) -> tuple[tuple[str, int], tuple[int, int]]:
    (length,) = struct.unpack_from(">h", key)
    topic = key[2 : 2 + length].decode()
    (partition,) = struct.unpack_from(">i", key, 2 + length)
    return (topic, partition), struct.unpack(">qq", value)


def read_offset_syncs(source_bootstrap: str, *, timeout: float = 30.0) -> OffsetSyncs:
    """The latest offset sync of every mirrored partition (empty before MirrorMaker wrote any)."""
    latest = latest_by_key(source_bootstrap, MirrorNames().offset_syncs_topic, timeout=timeout)
    return dict(_parse(key, value) for key, value in latest.items() if key and value)


def next_unmirrored(syncs: OffsetSyncs) -> dict[tuple[str, int], int]:
    """Per synced partition, the first upstream offset not yet known to be mirrored (the monitor's mirror lag)."""
    return {where: upstream + 1 for where, (upstream, _downstream) in syncs.items()}


def mirror_lag(upstream_ends: dict[str, dict[int, int]], syncs: OffsetSyncs) -> int:
    """Upstream records not yet known to be mirrored: an upper bound while it runs (syncs trail by up to
    ``offset.lag.max`` records per partition), exact once each partition's last record is synced."""
    done = next_unmirrored(syncs)
    return sum(end - done.get((topic, p), 0) for topic, parts in upstream_ends.items() for p, end in parts.items())
