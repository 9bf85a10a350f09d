"""Publishing a closed night for the archive tests, following the team's message conventions.

The real publisher lives elsewhere; these tests publish their own input so they exercise the archiver alone:
create the night's topics, produce each packet keyed by objectId with the agreed headers, close the night
with the end offset of every partition.
"""

from __future__ import annotations

import datetime as dt
import time

from alertdist.avro import codec
from alertdist.avro.container import build_container, parse_container
from alertdist.kafka.clients import admin_client
from alertdist.kafka.producer import CountingProducer
from alertdist.nights.state import NightState, end_offsets, mark_night
from alertdist.nights.topics import TopicNaming, TopicSettings, ensure_night_topics

__all__ = ["publish_night"]


def publish_night(
    bootstrap: str,
    naming: TopicNaming,
    night: dt.date,
    packets_by_programme: dict[int, list[bytes]],
    *,
    partitions: int = 4,
    close: bool = True,
) -> NightState | None:
    """Produce every packet to its programme topic, then (by default) mark the night closed; returns the state."""
    ensure_night_topics(
        admin_client(bootstrap),
        naming,
        night,
        TopicSettings(partitions=partitions),
        programmes=sorted(packets_by_programme),
    )
    out = CountingProducer(bootstrap)
    now_ms = str(int(time.time() * 1000)).encode()
    for programid, packets in sorted(packets_by_programme.items()):
        topic = naming.programme_topic(night, programid)
        for packet in packets:
            try:
                info = codec.peek(packet)
                key, candid = info.objectId.encode(), str(info.candid).encode()
            except codec.AlertPacketError:
                key, candid = b"malformed", b"0"  # tests inject bad messages on purpose
            headers = [
                ("alertdist.produced_ms", now_ms),
                ("alertdist.published_ms", now_ms),
                ("alertdist.candid", candid),
            ]
            out.produce(topic, packet, key, headers)
    out.finish(60)
    if not close:
        return None
    topics = [naming.programme_topic(night, pid) for pid in sorted(packets_by_programme)]
    state = NightState(f"{night:%Y%m%d}", "closed", end_offsets(bootstrap, topics))
    mark_night(bootstrap, naming, state)
    return state


def cut_short(packet: bytes, cut: int = 3000) -> bytes:
    """``packet`` with its record cut ``cut`` bytes before the end (inside the cutouts) but framed as a whole
    container: the publisher's checks pass, only a full decode finds the damage."""
    container = parse_container(packet)
    return build_container(
        packet[container.schema_start : container.schema_end],
        packet[container.body_start : container.body_end - cut],
        container.sync_marker,
        container.metadata_keys,
    )
