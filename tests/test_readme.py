"""The README runs as written: every ```python and ```sh block, exactly as it stands, after a night is archived.

A new user copies them after `make night`, from the project folder. Here a short simulated night is published to the
test broker (survey `ztf`, as `make night` names it, on a night no other test uses) and archived into a project
folder's `.alertdist/archive`; each block then runs in that folder with the settings `make night` would leave (the
broker's address, the state folder), and must exit 0 and print what it found.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from alertdist.archive import ArchiveOptions, archive_night
from alertdist.kafka.clients import admin_client
from alertdist.nights.topics import TopicNaming, TopicSettings, ensure_night_topics
from alertdist.publish.publisher import publish
from alertdist.publish.sources import SourcePacket, simulated_alerts

REPO = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```(python|sh|bash)\n(.*?)^```$", re.M | re.S)
BLOCKS = BLOCK.findall((REPO / "README.md").read_text())


def _label(block: tuple[str, str]) -> str:
    kind, code = block
    return f"{kind}:{next(line for line in code.splitlines() if line.strip())[:50]}"


@pytest.fixture(scope="module")
def project(kafka_bootstrap, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A project folder after `make night`: a closed, archived simulated night in `.alertdist/archive`."""
    folder = tmp_path_factory.mktemp("project")
    (folder / ".venv").symlink_to(Path(sys.executable).parents[1])  # the blocks call .venv/bin/...
    naming = TopicNaming()  # survey ztf, as after `make night`: the blocks name its files and topics
    existing = admin_client(kafka_bootstrap).list_topics(timeout=30).topics
    night = next(  # a night of 2022 no test (nor an earlier run on the same broker) has published
        n
        for n in (dt.date(2022, 1, 1) + dt.timedelta(days=random.randrange(360)) for _ in range(1000))
        if naming.programme_topic(n, 1) not in existing
    )
    ensure_night_topics(admin_client(kafka_bootstrap), naming, night, TopicSettings(partitions=2))
    published = publish(
        (SourcePacket(f"{a.candid}.avro", a.packet, None) for a in simulated_alerts(300, night=night, seed=5)),
        bootstrap_servers=kafka_bootstrap,
        naming=naming,
        night=night,
    )
    assert published.closed and published.delivered_total == 300
    archive_night(kafka_bootstrap, naming, night, str(folder / ".alertdist" / "archive"), ArchiveOptions())
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALERTDIST_")}
    env.update(ALERTDIST_BOOTSTRAP_SERVERS=kafka_bootstrap, ALERTDIST_HOME=str(folder / ".alertdist"))
    return folder, env


def test_the_readme_has_runnable_blocks_of_both_kinds():
    kinds = [kind for kind, _ in BLOCKS]
    assert kinds.count("python") >= 5 and kinds.count("sh") >= 2, kinds
    assert any("Consumer(" in code and "fastavro" in code for _, code in BLOCKS)  # the plain local consumer


@pytest.mark.parametrize("block", BLOCKS, ids=[_label(b) for b in BLOCKS])
def test_each_readme_block_runs_as_written_after_a_night(block, project):
    kind, code = block
    folder, env = project
    command = [sys.executable, "-c", code] if kind == "python" else ["bash", "-e", "-o", "pipefail", "-c", code]
    ran = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0, f"{code}\n--- stdout\n{ran.stdout[-2000:]}\n--- stderr\n{ran.stderr[-3000:]}"
    assert ran.stdout.strip(), f"the block printed nothing:\n{code}"  # each says what it found
