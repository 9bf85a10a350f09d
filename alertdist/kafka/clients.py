"""Kafka clients built one way everywhere: quiet logs, sizes that fit ZTF packets, safe producer defaults.

Every function takes the bootstrap servers explicitly and lets the caller override any librdkafka key;
librdkafka itself rejects an unknown key with an error that names it. On a secured cluster the bootstrap servers
are a `Brokers`, which also carries the identity to log in as (`Settings.kafka` picks it per service).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

__all__ = [
    "MAX_MESSAGE_BYTES",
    "UNASSIGNED_GROUP",
    "Brokers",
    "admin_client",
    "consumer",
    "opened_secret",
    "producer",
    "scram_client_config",
]

#: Largest packet we accept and configure topics for (real ZTF alerts are 50-150 KB; rare ones reach ~1 MB).
MAX_MESSAGE_BYTES = 10 * 1024 * 1024

#: The group id of a consumer that reads by assignment and commits nothing (librdkafka needs one all the same,
#: and looks its coordinator up, so a secured service needs DESCRIBE on it: see `security.user_acls`).
UNASSIGNED_GROUP = "alertdist-unassigned"

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


class Brokers(str):
    """Bootstrap servers that also carry how to log in to them (librdkafka keys; the password a secret).

    A `str`, so every layer that hands bootstrap servers down hands the identity down with them, unchanged and
    unseen; only `_common` opens it, when a client is built. Its repr names the user, never the password.
    """

    login: dict

    def __new__(cls, servers: str, login: Mapping[str, object] | None = None) -> Brokers:
        self = super().__new__(cls, servers)
        self.login = dict(login or {})
        return self

    def __reduce__(self):  # pickled into the night's stage processes with its login
        return (Brokers, (str(self), self.login))

    def __repr__(self) -> str:
        return f"Brokers({str(self)!r}, user={self.login.get('sasl.username')!r})"


def scram_client_config(username: str, password, *, ca_location=None) -> dict:
    """librdkafka settings for a SCRAM-SHA-512 client; with ``ca_location`` (the CA's PEM) over TLS.

    ``password`` may be a pydantic ``SecretStr``: it is opened only when a client is built."""
    config = {
        "security.protocol": "SASL_SSL" if ca_location else "SASL_PLAINTEXT",
        "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": username,
        "sasl.password": password,
    }
    if ca_location:
        config["ssl.ca.location"] = str(ca_location)
    return config


def opened_secret(value):
    """A login value as a client needs it: a ``SecretStr`` opened, anything else as it is."""
    return value.get_secret_value() if hasattr(value, "get_secret_value") else value


def _common(bootstrap_servers: str) -> dict:
    login = {k: opened_secret(v) for k, v in getattr(bootstrap_servers, "login", {}).items()}
    return {"bootstrap.servers": str(bootstrap_servers), "logger": _LIBRDKAFKA_LOG, **login}


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
        "group.id": group_id or UNASSIGNED_GROUP,
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
