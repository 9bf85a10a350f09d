"""Two-tier test helpers: settings for the two clusters and a running MirrorMaker 2, and reading a night's
programme topics as (key, value, headers) per partition, for comparing the clusters."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections import Counter
from pathlib import Path

from alertdist.infra import kafka_local
from alertdist.jobs import mirror
from alertdist.mirror import process
from alertdist.settings import Settings
from tests.kafka_support import read_to_end

__all__ = ["contents", "running_mirror", "two_tier_settings"]


def two_tier_settings(two_clusters, home: Path, **overrides) -> Settings:
    """Settings for the producing and public clusters, with MirrorMaker's files under ``home`` (the jars linked)."""
    (home / "kafka").mkdir(parents=True, exist_ok=True)
    libs = home / "kafka" / "libs"
    if not libs.exists():
        libs.symlink_to(Settings.load().kafka_home / "libs", target_is_directory=True)
    return Settings.load(
        home=home,
        bootstrap_servers=two_clusters.producing.bootstrap_servers,
        public_bootstrap_servers=two_clusters.public.bootstrap_servers,
        mirror_rest_port=kafka_local.free_port(),
        **overrides,
    )


@contextlib.contextmanager
def running_mirror(settings: Settings):
    """MirrorMaker 2 between the two clusters for the length of the block."""
    mirror.start_mirror(settings)
    try:
        yield mirror.mirror_home(settings)
    finally:
        process.stop(mirror.mirror_home(settings))


def contents(bootstrap: str, settings: Settings, night: dt.date) -> dict[str, Counter]:
    """Every message of the night's programme topics: topic -> Counter of (partition, key, value, headers)."""
    result = {}
    for topic in settings.naming.programme_topics(night).values():
        messages = read_to_end(bootstrap, [topic], settle=True)
        result[topic] = Counter((m.partition(), m.key(), m.value(), tuple(m.headers() or ())) for m in messages)
    return result
