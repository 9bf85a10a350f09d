"""Free loopback ports for local services, chosen below the kernel's ephemeral range."""

from __future__ import annotations

import random
import socket
from pathlib import Path

__all__ = ["NoFreePortError", "free_port", "free_ports"]


class NoFreePortError(RuntimeError):
    """No free port (pair) was found: too many services on this machine, or a narrow port range."""


def _ephemeral_ports_start() -> int:
    """Where the kernel's range for client sockets' local ports begins (Linux: 32768 unless configured)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_ports(count: int) -> int:
    """A port p with p..p+count-1 and p+10000.. (client and controller listeners) free, all below the ephemeral
    range: a port from that range can be handed to some client socket (the brokers' own connections included)
    between this check and the broker's bind, which made a 3-broker start fail with "Address already in use"."""
    top = _ephemeral_ports_start() - 10000 - count
    chooser = random.Random()
    for _ in range(500):
        port = chooser.randrange(10000, top)
        if all(_is_free(port + i) and _is_free(port + 10000 + i) for i in range(count)):
            return port
    raise NoFreePortError(f"no {count} free port pairs found between 10000 and {top + 10000 + count}")


def free_port() -> int:
    """One free loopback port below the ephemeral range (for a listener such as MirrorMaker's internal REST)."""
    return free_ports(1)
