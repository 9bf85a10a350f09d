"""docs/examples/wait_for_tonight.py, the readers' example: started before the night opens, it waits (no topic
list polling), reads the night and returns once the night is closed and read to its closing offsets."""

from __future__ import annotations

import datetime as dt
import importlib.util
import threading

from alertdist.kafka.clients import admin_client
from alertdist.nights.topics import TopicNaming, TopicSettings, ensure_night_topics
from alertdist.publish.publisher import publish
from alertdist.publish.sources import simulated_packets
from tests.conftest import REPO

NIGHT = dt.date(2023, 10, 12)


def _example():
    spec = importlib.util.spec_from_file_location(
        "wait_for_tonight", REPO / "docs" / "examples" / "wait_for_tonight.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_example_reader_waits_for_tonight_reads_it_and_stops_when_it_is_closed(kafka_bootstrap, unique):
    example = _example()
    naming = TopicNaming(survey=f"r{unique}")
    ensure_night_topics(admin_client(kafka_bootstrap), naming, NIGHT, TopicSettings(partitions=3))
    seen: list[bytes] = []
    outcome: dict = {}

    def reader():
        outcome["read"] = example.read_tonight(
            kafka_bootstrap, naming.survey, f"{NIGHT:%Y%m%d}", f"reader-{unique}", on_alert=seen.append
        )

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    thread.join(3.0)
    assert thread.is_alive() and not seen  # the night has not opened: it waits

    packets = list(simulated_packets(60, night=NIGHT, seed=11))
    result = publish(packets, bootstrap_servers=kafka_bootstrap, naming=naming, night=NIGHT)
    assert result.closed

    thread.join(60)
    assert not thread.is_alive(), "the reader did not stop after the night was closed and read"
    assert outcome["read"] == result.delivered_total == 60
    assert sorted(seen) == sorted(p.packet for p in packets)
