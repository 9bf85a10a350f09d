"""What every packet source gives the publisher: `SourcePacket`s, through one seam, `PacketSource`.

A source is anything that yields packets as it finds them (a drop folder, a folder, a tarball, an archived
night, a simulation); a live one may also yield ``None``: "nothing new right now". What only some sources need
(settling a file once Kafka has its packet, retiring an end-of-night marker) is a method of the protocol with a
default that does nothing, so the publisher calls it on every source and never asks which kind it has.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from alertdist.kafka.clients import MAX_MESSAGE_BYTES

__all__ = [
    "DEFAULT_MAX_PACKET_BYTES",
    "PacketSource",
    "Packets",
    "SourceError",
    "SourcePacket",
    "as_source",
    "safe_text",
]

#: Largest packet published: the topics' limit less room for the batch header, key and headers. Sources read no
#: file or member further than this.
DEFAULT_MAX_PACKET_BYTES = MAX_MESSAGE_BYTES - 64 * 1024


class SourceError(RuntimeError):
    """A source could not be opened or read; the message names it."""


@dataclass(frozen=True, slots=True)
class SourcePacket:
    """One packet as found: ``name`` identifies it in logs and rejections (a file or member name).

    ``problem``: set when the source already knows this is not a publishable packet ("kind: why", the kind one of
    the publisher's reject kinds); ``packet`` then holds what was read of it, at most its head, and
    ``original_size`` its full size when that is more.
    """

    name: str
    packet: bytes
    produced_ms: int | None  # when the alert pipeline produced it (ms since epoch); None: unknown, no latency
    path: Path | None = None  # the drop-folder file it came from, settled after Kafka acknowledged it
    problem: str | None = None
    original_size: int | None = None

    @property
    def size(self) -> int:
        """The size of what was found, though only its head may have been read."""
        return len(self.packet) if self.original_size is None else self.original_size


@runtime_checkable
class PacketSource(Protocol):
    """Packets from somewhere, as the publisher, the replay and the batch filter take them.

    A source subclasses this and overrides what it needs; the defaults do nothing.
    """

    #: settlements that failed (a file Kafka has that could not be removed: a duplicate after a restart)
    settle_errors: int = 0

    def __iter__(self) -> Iterator[SourcePacket | None]: ...

    def settle(self, item: SourcePacket, rejected: bool) -> None:
        """Kafka acknowledged ``item`` (into the rejected topic if ``rejected``): a source whose packets must
        outlive a crash lets go of it only now."""

    def night_closed(self, night: dt.date) -> None:
        """``night`` was closed with every packet accounted for: a source with an end-of-night marker retires it,
        so that it cannot end the next night."""


class Packets(PacketSource):
    """Any iterable of packets (a generator, a list) as a source with nothing to settle."""

    def __init__(self, items: Iterable[SourcePacket | None]) -> None:
        self.items = items

    def __iter__(self) -> Iterator[SourcePacket | None]:
        return iter(self.items)


def as_source(source: PacketSource | Iterable[SourcePacket | None]) -> PacketSource:
    """``source`` itself if it is a `PacketSource`, else the plain iterable as one."""
    return source if isinstance(source, PacketSource) else Packets(source)


def safe_text(text: str) -> str:
    """``text`` fit for a Kafka header and a log line: unchanged if it is printable and UTF-8, else escaped.

    A file name is bytes to the operating system: one that is not UTF-8 comes back from it with surrogates, which
    cannot be encoded, and one may hold a newline. Escaping keeps it readable and one line.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return ascii(text)[1:-1]
    return text if text.isprintable() else ascii(text)[1:-1]
