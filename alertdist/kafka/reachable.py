"""A quick look at whether any broker is listening, so a command fails in a second, not after client timeouts."""

from __future__ import annotations

import socket

__all__ = ["any_broker_listening"]


def _host_port(address: str) -> tuple[str, int]:
    address = address.strip().rpartition("://")[2]  # listener-name prefixes such as SASL_SSL://
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def any_broker_listening(bootstrap_servers: str, timeout: float = 2.0) -> bool:
    """Whether a TCP connection opens to at least one bootstrap address (the clients need only one)."""
    for address in filter(None, bootstrap_servers.split(",")):
        try:
            with socket.create_connection(_host_port(address), timeout=timeout):
                return True
        except (OSError, ValueError):
            continue
    return False
