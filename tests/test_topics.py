"""Nightly topics: names, the night-date rule, settings read back from Kafka, idempotent creation."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from confluent_kafka.admin import ConfigResource

from alertdist.kafka.clients import admin_client
from alertdist.nights.dates import SITES, night_date, parse_night
from alertdist.nights.state import NightState, end_offsets, mark_night, read_night_state
from alertdist.nights.topics import TopicNaming, TopicSettings, ensure_night_topics


def _local(site, y, m, d, hh, mm=0):
    return dt.datetime(y, m, d, hh, mm, tzinfo=ZoneInfo(SITES[site].timezone))


@pytest.mark.parametrize("hour", [18, 19, 21, 23])
def test_palomar_nights_are_named_by_the_utc_date_which_holds_all_night(hour):
    evening = _local("palomar", 2023, 10, 11, hour)
    morning = _local("palomar", 2023, 10, 12, 6, 30)
    assert night_date(evening, SITES["palomar"]) == dt.date(2023, 10, 12)
    assert night_date(morning, SITES["palomar"]) == dt.date(2023, 10, 12)
    assert night_date(evening, SITES["palomar"]) == evening.astimezone(dt.UTC).date()


def test_chilean_nights_cross_utc_midnight_but_keep_one_local_start_date():
    site = SITES["cerro-pachon"]
    evening = _local("cerro-pachon", 2024, 3, 5, 20)  # 23:00 UTC on the 5th
    after_midnight_utc = _local("cerro-pachon", 2024, 3, 6, 4)  # 07:00 UTC on the 6th
    assert evening.astimezone(dt.UTC).date() != after_midnight_utc.astimezone(dt.UTC).date()
    assert night_date(evening, site) == night_date(after_midnight_utc, site) == dt.date(2024, 3, 5)


def test_naive_datetimes_are_refused():
    with pytest.raises(ValueError, match="aware"):
        night_date(dt.datetime(2023, 10, 12, 3), SITES["palomar"])


def test_names_follow_ztf_and_are_configurable():
    night = parse_night("2023-10-12")
    assert TopicNaming().programme_topic(night, 2) == "ztf_20231012_programid2"
    lsst = TopicNaming(survey="lsst", programmes={1: "public"})
    assert lsst.programme_topics(night) == {1: "lsst_20231012_programid1"}
    assert TopicNaming().programid_of("ztf_20231012_programid3_bright") == 3
    with pytest.raises(ValueError):
        TopicNaming().programme_topic(night, 4)


def test_topics_created_with_their_settings_and_second_creation_is_a_no_op(kafka_bootstrap, unique):
    admin = admin_client(kafka_bootstrap)
    naming = TopicNaming(survey=f"t{unique}")
    night = dt.date(2023, 10, 12)
    first = ensure_night_topics(admin, naming, night)
    assert set(first) == {*naming.programme_topics(night).values(), naming.rejected_topic(night), naming.nights_topic}
    assert set(first.values()) == {"created"}

    metadata = admin.list_topics(timeout=10)
    topic = f"t{unique}_20231012_programid1"
    assert len(metadata.topics[topic].partitions) == 14
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    config = admin.describe_configs([resource])[resource].result()
    assert config["retention.ms"].value == str(7 * 24 * 3600 * 1000)
    assert config["compression.type"].value == "lz4"
    assert int(config["max.message.bytes"].value) >= 2 * 1024 * 1024
    nights = ConfigResource(ConfigResource.Type.TOPIC, naming.nights_topic)
    assert admin.describe_configs([nights])[nights].result()["cleanup.policy"].value == "compact"

    second = ensure_night_topics(admin, naming, night)
    assert set(second.values()) == {"exists"}
    drifted = ensure_night_topics(admin, naming, night, TopicSettings(partitions=4, retention_ms=1000))
    assert "partitions 14 != 4" in drifted[topic] and "retention.ms" in drifted[topic]


def test_night_state_round_trips_through_the_compacted_topic(kafka_bootstrap, unique):
    admin = admin_client(kafka_bootstrap)
    naming = TopicNaming(survey=f"s{unique}")
    night = dt.date(2023, 10, 12)
    ensure_night_topics(admin, naming, night, TopicSettings(partitions=2))
    assert read_night_state(kafka_bootstrap, naming, night) is None
    mark_night(kafka_bootstrap, naming, NightState("20231012", "open"))
    assert read_night_state(kafka_bootstrap, naming, night).state == "open"
    offsets = end_offsets(kafka_bootstrap, list(naming.programme_topics(night).values()))
    mark_night(kafka_bootstrap, naming, NightState("20231012", "closed", offsets, {"read": 0}))
    state = read_night_state(kafka_bootstrap, naming, night)
    assert state.closed and state.end_offsets == offsets and state.total_messages() == 0
    assert read_night_state(kafka_bootstrap, naming, dt.date(2023, 10, 13)) is None
