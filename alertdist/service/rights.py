"""Who may read what over HTTP: API tokens with the Kafka logins' roles, and per-token rate limits.

Programme 1 is public (no token needed); programmes 2 and 3 follow the token's role as in `alertdist.security`
(`partnership` 1-2, `caltech` 1-3). Tokens are issued and revoked by the operator (`alertdist serve token ...`)
and stored as their sha256 only, in a file only its owner may read (0600): a copy of the file lets nobody in.
A token is random (256 bits), so a plain sha256 is as strong as a slow hash and costs nothing per request.

Rate limits are token buckets kept by each worker process (a replica counts its own requests: the limit per
replica is what the operator sets), tiered like Lasair's: anonymous callers get the lowest.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from alertdist.atomic import write_atomically
from alertdist.security import ROLES

__all__ = [
    "PUBLIC_PROGRAMMES",
    "RATE_TIERS",
    "Caller",
    "RateLimiter",
    "TokenError",
    "TokenStore",
]

PUBLIC_PROGRAMMES = frozenset({1})
#: requests per second (sustained) and burst, per tier; a token's tier is named when it is issued
RATE_TIERS: dict[str, tuple[float, int]] = {
    "anonymous": (20.0, 40),
    "standard": (50.0, 100),
    "bulk": (1000.0, 2000),
}
_PREFIX = "ad_"


class TokenError(ValueError):
    """A token could not be issued or revoked; the message says why."""


@dataclass(frozen=True)
class Caller:
    """Who is asking: a token's name, role and tier, or the anonymous public."""

    name: str
    role: str
    tier: str
    programmes: frozenset[int]


ANONYMOUS = Caller("anonymous", "public", "anonymous", PUBLIC_PROGRAMMES)


def _consumer_roles() -> list[str]:
    return [name for name, role in ROLES.items() if not role.service]


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class _Entry:
    name: str
    role: str
    tier: str
    sha256: str
    created: str
    revoked: bool = False


class TokenStore:
    """The token file (JSON, 0600); re-read when it changes, so a revocation takes effect within a second."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._by_digest: dict[str, _Entry] = {}

    def _read(self) -> list[_Entry]:
        if not self.path.exists():
            return []
        return [_Entry(**e) for e in json.loads(self.path.read_text())["tokens"]]

    def _write(self, entries: list[_Entry]) -> None:
        text = json.dumps({"tokens": [asdict(e) for e in entries]}, indent=1)
        write_atomically(self.path, text.encode(), mode=0o600)  # hashes only, still nobody else's to read

    def add(self, name: str, role: str, tier: str = "standard") -> str:
        """Issue a token; returns it (shown once: only its hash is kept)."""
        if role not in _consumer_roles():
            raise TokenError(f"role {role!r} is not a reader's role; one of: {', '.join(_consumer_roles())}")
        if tier not in RATE_TIERS:
            raise TokenError(f"tier {tier!r} is unknown; one of: {', '.join(RATE_TIERS)}")
        entries = self._read()
        if any(e.name == name and not e.revoked for e in entries):
            raise TokenError(f"a token named {name!r} exists; revoke it first or choose another name")
        token = _PREFIX + secrets.token_urlsafe(32)
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        entries.append(_Entry(name, role, tier, _digest(token), created))
        self._write(entries)
        return token

    def revoke(self, name: str) -> None:
        entries = self._read()
        live = [e for e in entries if e.name == name and not e.revoked]
        if not live:
            raise TokenError(f"no live token named {name!r}; `alertdist serve token list` shows them")
        for e in live:
            e.revoked = True
        self._write(entries)

    def list(self) -> list[dict]:
        """Names, roles, tiers, dates and states (never a hash)."""
        return [{k: v for k, v in asdict(e).items() if k != "sha256"} for e in self._read()]

    def caller(self, token: str | None) -> Caller | None:
        """The caller a presented token stands for; None if it is unknown or revoked; anonymous without one."""
        if not token:
            return ANONYMOUS
        self._refresh()
        entry = self._by_digest.get(_digest(token))
        if entry is None or entry.revoked or not hmac.compare_digest(entry.sha256, _digest(token)):
            return None
        return Caller(entry.name, entry.role, entry.tier, frozenset(ROLES[entry.role].programmes))

    def _refresh(self) -> None:
        try:
            stat = self.path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            stamp = (0, 0)
        if stamp != self._stamp:
            with self._lock:
                self._by_digest = {e.sha256: e for e in self._read()}
                self._stamp = stamp


class RateLimiter:
    """Token buckets per caller name; `take` returns 0 when allowed, else the seconds to wait."""

    def __init__(self, tiers: dict[str, tuple[float, int]] = RATE_TIERS) -> None:
        self.tiers = tiers
        self._buckets: dict[str, tuple[float, float]] = {}  # name -> (tokens, last time)
        self._lock = threading.Lock()

    def take(self, caller: Caller, key: str | None = None) -> float:
        rate, burst = self.tiers[caller.tier]
        now = time.monotonic()
        name = key or caller.name
        with self._lock:
            tokens, last = self._buckets.get(name, (float(burst), now))
            tokens = min(float(burst), tokens + (now - last) * rate)
            if tokens >= 1.0:
                self._buckets[name] = (tokens - 1.0, now)
                return 0.0
            self._buckets[name] = (tokens, now)
            return (1.0 - tokens) / rate
