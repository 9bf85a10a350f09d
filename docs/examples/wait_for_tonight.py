"""A reader that waits for tonight's stream to open, reads it, and stops when the night is closed and read.

Needs only confluent-kafka: no polling of the topic list. The compacted ``<survey>_nights`` topic holds one
JSON record per night (key: the night, ``YYYYMMDD``): ``{"state": "open"}`` when the publisher starts it, then
``{"state": "closed", "end_offsets": {topic: {partition: offset}}}`` once every packet is acknowledged. In the
two-tier mode the public cluster's closing record comes from the system itself (its own offsets); a record
whose ``cluster`` is not this cluster's id is a copy of the producing cluster's: wait for the next one.

    python wait_for_tonight.py BOOTSTRAP NIGHT [--survey ztf] [--group my-broker]
"""

from __future__ import annotations

import argparse
import json

from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient


class NightWatch:
    """The latest state of one night, read from the nights topic without blocking the reader."""

    def __init__(self, bootstrap: str, survey: str, night: str):
        self.night, self.state = night, None
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False})
        topic = f"{survey}_nights"
        partitions = self.consumer.list_topics(topic, timeout=30).topics[topic].partitions
        self.consumer.assign([TopicPartition(topic, p, 0) for p in partitions])  # compacted: small, read it all

    def poll(self, timeout: float) -> dict | None:
        msg = self.consumer.poll(timeout)
        while msg is not None:
            if msg.error() is None and msg.key() is not None and msg.key().decode() == self.night and msg.value():
                self.state = json.loads(msg.value())
            msg = self.consumer.poll(0)
        return self.state

    def close(self) -> None:
        self.consumer.close()


def read_tonight(bootstrap: str, survey: str, night: str, group: str, *, on_alert=print) -> int:
    """Wait for ``night`` to open, read its programme topics until it is closed and read to its end offsets;
    returns the alerts read."""
    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept until it answered: a freed client drops requests
    cluster = admin.describe_cluster(request_timeout=30).result().cluster_id
    watch = NightWatch(bootstrap, survey, night)
    while watch.poll(1.0) is None:  # not opened yet: wait, without listing topics
        pass
    reader = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )
    reader.subscribe([f"^{survey}_{night}_programid[0-9]+$"])
    read, ends, positions = 0, None, {}
    try:
        while True:
            state = watch.poll(0)
            if ends is None and state["state"] == "closed" and state.get("cluster") in (None, cluster):
                ends = {(t, int(p)): o for t, parts in state["end_offsets"].items() for p, o in parts.items()}
            if ends is not None and all(positions.get(where, 0) >= end for where, end in ends.items()):
                return read
            msg = reader.poll(0.5)
            if msg is None:
                continue
            where = (msg.topic(), msg.partition())
            if msg.error() is None:
                on_alert(msg.value())
                read += 1
                positions[where] = msg.offset() + 1
            elif msg.error().code() == KafkaError._PARTITION_EOF:
                positions[where] = max(positions.get(where, 0), msg.offset())
    finally:
        reader.close()
        watch.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bootstrap")
    parser.add_argument("night", help="YYYYMMDD")
    parser.add_argument("--survey", default="ztf")
    parser.add_argument("--group", default="my-broker")
    args = parser.parse_args()
    count = read_tonight(args.bootstrap, args.survey, args.night, args.group, on_alert=lambda _: None)
    print(f"night {args.night}: {count} alerts read, the night is closed and consumed")
