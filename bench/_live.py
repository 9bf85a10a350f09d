"""A live night for the whole-system benchmarks: the `night` flow (publisher, the three bundled filters, then the
archiver) reading a drop folder that this script fills as the alert pipeline would, latency readers on its topics,
and a `Player` with which a benchmark's script writes packets at a pace, waits for the night to settle, and
measures latency and every process's CPU between two moments.

The script's ``play(player)`` runs in a thread once the stages are up (the night open, each filter's group stable
with all the night's partitions); the flow runs in the main thread and ends when ``play`` returns (NIGHT_DONE).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from _system import FILTERS, FilterLag, LatencyReaders, SystemCPU, name_stages, percentiles


def print_line(line: dict, started: float, load_before: tuple) -> None:
    """The JSON last line, with the run's wall time and the load average before and after it."""
    line.update(
        bench_wall_s=round(time.monotonic() - started),
        load_before=[round(x, 2) for x in load_before],
        load_after=[round(x, 2) for x in os.getloadavg()],
    )
    print(json.dumps(line))


def run_night(bootstrap: str, folder: Path, night: dt.date, archive: Path, survey: str) -> dict:
    """The `night` flow on a drop folder, three filters live; its result (raises if it failed)."""
    from alertdist.flows.night import night as night_flow

    state = night_flow(
        night=night,
        source=str(folder),
        filters=FILTERS,
        dest=str(archive),
        bootstrap_servers=bootstrap,
        survey=survey,
        return_state=True,
    )
    if not state.is_completed():
        raise RuntimeError(f"the night failed: {state.message}")
    return state.result()


@dataclasses.dataclass
class Window:
    """What was written between two moments: file times [start_ms, end_ms), how many, how long it took."""

    start_ms: int
    end_ms: int
    alerts: int
    seconds: float


class Player:
    """Writes packet files into the night's drop folder and measures what the system did with them."""

    def __init__(self, packets: list[bytes], folder: Path, readers: LatencyReaders, lag: FilterLag, cpu: SystemCPU):
        self.packets, self.folder, self.readers, self.lag, self.cpu = packets, folder, readers, lag, cpu
        self.written = 0

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def write(self, count: int) -> None:
        """``count`` files at once (complete files only, renamed into place), cycling the packets."""
        for i in range(self.written, self.written + count):
            partial = self.folder / f".{i}.avro.tmp"
            partial.write_bytes(self.packets[i % len(self.packets)])
            os.replace(partial, self.folder / f"{i}.avro")
        self.written += count

    def play(self, rate_per_minute: float, seconds: float, chunk_s: float = 0.01) -> Window:
        """Files evenly at ``rate_per_minute`` for ``seconds`` (in chunks of ``chunk_s``' worth when behind)."""
        time.sleep(0.01)  # file times come from a clock that may lag a few ms: a clean split from what came before
        start_ms, started, first = self.now_ms() - 2, time.monotonic(), self.written
        total, per_s = int(rate_per_minute / 60 * seconds), rate_per_minute / 60
        while self.written - first < total:
            due = min(total, int((time.monotonic() - started) * per_s) + 1)
            if due > self.written - first:
                self.write(due - (self.written - first))
            else:
                time.sleep(max(0.0, started + (self.written - first) / per_s - time.monotonic()))
        elapsed = time.monotonic() - started
        time.sleep(0.01)
        return Window(start_ms, self.now_ms(), total, elapsed)

    def consumer_has_all(self, until: float) -> bool:
        """Whether the plain reader has every alert written so far by ``until`` (monotonic)."""
        while time.monotonic() < until:
            self.readers.collect()
            if len(self.readers.pairs["consumer"]) >= self.written:
                return True
            time.sleep(0.05)
        return False

    def settle(self, timeout: float) -> float | None:
        """Wait until the plain reader has every alert written so far and every filter's lag is zero (then 1 s
        for the last committed outputs to reach their reader): the seconds it took, None if not within
        ``timeout``."""
        started = time.monotonic()
        if not self.consumer_has_all(started + timeout):
            return None
        drained = self.lag.wait_zero(timeout - (time.monotonic() - started))
        if drained is None:
            return None
        took = time.monotonic() - started
        time.sleep(1.0)
        self.readers.collect()
        return took

    def latency(self, window: Window) -> dict:
        """Percentiles of the window's alerts: to the plain reader, to each filter's output and all of them."""
        outputs = {f: self.readers.between(f, window.start_ms, window.end_ms) for f in FILTERS}
        return {
            "consumer": percentiles(self.readers.between("consumer", window.start_ms, window.end_ms)),
            "filters": {f: percentiles(v) for f, v in outputs.items()},
            "filters_all": percentiles([x for v in outputs.values() for x in v]),
        }


def _stages_up(bootstrap: str, naming, night: dt.date, partitions: int, timeout: float = 300.0) -> None:
    """Wait until the night is open (the publisher watches its folder) and each filter's group is stable with all
    ``partitions`` of the night assigned (it is consuming), as at Palomar, where the stages start at 17:10 and the
    first exposure comes after twilight."""
    from confluent_kafka import ConsumerGroupState

    from alertdist.filters.live import group_id_for
    from alertdist.kafka.clients import admin_client
    from alertdist.nights.state import read_night_state

    admin, groups = admin_client(bootstrap), [group_id_for(naming, night, f) for f in FILTERS]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = read_night_state(bootstrap, naming, night)
        if state is not None and state.state == "open":
            described = [f.result() for f in admin.describe_consumer_groups(groups).values()]
            if all(
                g.state == ConsumerGroupState.STABLE
                and sum(len(m.assignment.topic_partitions) for m in g.members) == partitions
                for g in described
            ):
                return
        time.sleep(0.5)
    raise RuntimeError(f"the night's stages did not start within {timeout:.0f} s")


def live_night(
    bootstrap: str,
    pids: dict[str, int],
    scratch: Path,
    night: dt.date,
    survey: str,
    packets: list[bytes],
    play: Callable[[Player], dict],
) -> tuple[dict, dict]:
    """Run a night whose pipeline is ``play``: (what ``play`` returned, its stage processes named after their
    stages; the night flow's result). ``pids``: the broker's and the Prefect server's process ids."""
    from alertdist.filters.live import group_id_for
    from alertdist.kafka.clients import admin_client
    from alertdist.nights.topics import TopicNaming, TopicSettings, create_topics, ensure_night_topics

    naming, layout = TopicNaming(survey=survey), TopicSettings()
    inputs = list(naming.programme_topics(night).values())
    outputs = {f: [naming.filter_output_topic(t, f) for t in inputs] for f in FILTERS}
    # every topic exists before the readers assign themselves to it (the filters create their outputs later)
    admin = admin_client(bootstrap)
    ensure_night_topics(admin, naming, night, layout)
    create_topics(admin, {t: (layout.partitions, 1, {}) for t in itertools.chain(*outputs.values())})
    readers = LatencyReaders(bootstrap, inputs, outputs)
    folder = scratch / f"drop-{survey}"
    folder.mkdir()
    groups = {f: group_id_for(naming, night, f) for f in FILTERS}
    outcome: dict = {}

    def pipeline() -> None:
        try:
            _stages_up(bootstrap, naming, night, layout.partitions * len(inputs))
            cpu = SystemCPU(pids["broker"], pids["prefect"], readers.pids, {threading.get_native_id()})
            lag = FilterLag(bootstrap, inputs, groups, layout.partitions)
            outcome["result"] = play(Player(packets, folder, readers, lag, cpu))
        except BaseException as e:  # reported by the main thread once the night has ended
            outcome["error"] = e
        finally:
            (folder / "NIGHT_DONE").touch()

    thread = threading.Thread(target=pipeline, name="bench-pipeline")
    thread.start()
    try:
        result = run_night(bootstrap, folder, night, scratch / f"archive-{survey}", survey)
    finally:
        thread.join()
        readers.close()
    if "error" in outcome:
        raise outcome["error"]
    return name_stages(outcome["result"], result["stages"]), result
