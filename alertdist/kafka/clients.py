"""Kafka clients built one way everywhere: quiet logs, sizes that fit ZTF packets, safe producer defaults.

Every function takes the bootstrap servers explicitly and lets the caller override any librdkafka key;
librdkafka itself rejects an unknown key with an error that names it.
"""

from __future__ import annotations

import logging

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

__all__ = ["MAX_MESSAGE_BYTES", "admin_client", "consumer", "producer"]

#: Largest packet we accept and configure topics for (real ZTF alerts are 50-150 KB; rare ones reach ~1 MB).
MAX_MESSAGE_BYTES = 10 * 1024 * 1024

_log = logging.getLogger("alertdist.kafka")

#: librdkafka lines about what a client recovers from by itself: a fresh broker answers "Not coordinator" while
#: it creates its offsets and transaction topics, and a broker that is down is reported once, by the caller's
#: error (`errors.is_unreachable`), not by a line per connection attempt.
_ROUTINE = (
    "Not coordinator",
    "NOT_COORDINATOR",
    "COORDINATOR_NOT_AVAILABLE",
    "Coordinator not available",
    "Connection refused",
)


class _LibrdkafkaLog:
    """librdkafka's log lines into ``alertdist.kafka``, the routine ones (`_ROUTINE`) at DEBUG, not as warnings."""

    def log(self, level: int, msg: str, *args) -> None:
        text = msg % args if args else msg
        _log.log(logging.DEBUG if any(r in text for r in _ROUTINE) else level, "%s", text)


_LIBRDKAFKA_LOG = _LibrdkafkaLog()


def _common(bootstrap_servers: str) -> dict:
    return {"bootstrap.servers": bootstrap_servers, "logger": _LIBRDKAFKA_LOG}


def admin_client(bootstrap_servers: str, **overrides) -> AdminClient:
    return AdminClient({**_common(bootstrap_servers), **overrides})


def producer(bootstrap_servers: str, **overrides) -> Producer:
    """An idempotent producer (acks=all): a retry can never write a packet twice or reorder a partition."""
    config = {
        **_common(bootstrap_servers),
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": "lz4",
        "linger.ms": 20,
        "batch.size": 4 * 1024 * 1024,
        "message.max.bytes": MAX_MESSAGE_BYTES + 64 * 1024,
        "queue.buffering.max.kbytes": 512 * 1024,
        "queue.buffering.max.messages": 200_000,
    }
    config.update(overrides)
    return Producer(config)


def consumer(bootstrap_servers: str, group_id: str | None = None, **overrides) -> Consumer:
    """A consumer that commits nothing on its own: callers commit (or store) only after the work is safe."""
    config = {
        **_common(bootstrap_servers),
        "group.id": group_id or "alertdist-unassigned",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": True,
        # Small prefetch, short back-off: with librdkafka's defaults a 64 MB fetch of 80 KB alerts fills the
        # queue and pauses fetching for a whole second, so a fast loop waits on an empty queue half the time.
        "fetch.max.bytes": 16 * 1024 * 1024,
        "fetch.queue.backoff.ms": 10,
        "max.partition.fetch.bytes": MAX_MESSAGE_BYTES + 64 * 1024,
        "isolation.level": "read_committed",
    }
    config.update(overrides)
    return Consumer(config)
