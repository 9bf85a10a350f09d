"""The broker the project runs is real Apache Kafka in KRaft mode, and the infra scripts manage it."""

from __future__ import annotations

from confluent_kafka.admin import ConfigResource

from alertdist.infra import kafka_local
from alertdist.kafka.clients import admin_client


def test_broker_is_real_apache_kafka_in_kraft_mode(kafka_bootstrap):
    admin = admin_client(kafka_bootstrap)
    cluster = admin.describe_cluster(request_timeout=10).result()
    assert cluster.cluster_id and len(cluster.cluster_id) == 22  # KRaft's base64 Uuid
    broker = ConfigResource(ConfigResource.Type.BROKER, str(cluster.nodes[0].id))
    config = admin.describe_configs([broker], request_timeout=10)[broker].result()
    assert config["process.roles"].value == "broker,controller"  # KRaft combined mode, no ZooKeeper
    assert "zookeeper.connect" not in config or not config["zookeeper.connect"].value
    assert config["auto.create.topics.enable"].value == "false"


def test_install_is_a_no_op_the_second_time(tmp_path):
    from alertdist.settings import Settings

    libs = Settings.load().kafka_home / "libs"
    messages = []
    version = kafka_local.install(libs, log=messages.append)
    assert version == kafka_local.kafka_version() and version.startswith("4.")
    assert messages == [f"Kafka {version} already installed in {libs}"]
    assert any(p.name.startswith("kafka_2.13-") for p in libs.glob("*.jar"))


def test_a_libs_folder_fetched_for_an_older_pom_is_fetched_again(tmp_path):
    """The marker records every artifact the pom asks for, so jars fetched before MirrorMaker 2 joined the pom (a
    marker with the Kafka version alone) are refreshed, not taken as complete."""
    libs = tmp_path / "libs"
    libs.mkdir()
    (libs / kafka_local.MARKER).write_text(kafka_local.kafka_version() + "\n")  # the marker as it used to be
    messages = []
    kafka_local.install(libs, log=messages.append)
    assert "already installed" not in messages[0]
    assert (libs / kafka_local.MARKER).read_text().split() == [
        kafka_local.kafka_version(),
        *kafka_local.pom_artifacts(),
    ]
    assert any("connect-mirror" in a for a in kafka_local.pom_artifacts())
    assert (libs / f"connect-mirror-{kafka_local.kafka_version()}.jar").is_file()
    assert (libs / f"connect-mirror-client-{kafka_local.kafka_version()}.jar").is_file()


def test_restart_keeps_the_data(tmp_path):
    from confluent_kafka import TopicPartition

    from alertdist.kafka.clients import consumer, producer
    from alertdist.nights.topics import create_topics
    from tests.conftest import start_test_cluster

    cluster = start_test_cluster(tmp_path / "kafka")
    try:
        admin = admin_client(cluster.bootstrap_servers)
        create_topics(admin, {"kept": (1, 1, {})})
        p = producer(cluster.bootstrap_servers)
        p.produce("kept", b"survives a restart")
        assert p.flush(30) == 0
        kafka_local.stop(cluster, log=lambda *_: None)
        assert not any(n.running for n in kafka_local.status(cluster))
        kafka_local.start(cluster, log=lambda *_: None)
        c = consumer(cluster.bootstrap_servers)
        c.assign([TopicPartition("kept", 0, 0)])
        msg = None
        for _ in range(60):
            msg = c.poll(1.0)
            if msg is not None and not msg.error():
                break
        c.close()
        assert msg is not None and msg.value() == b"survives a restart"
        assert all(n.answering for n in kafka_local.status(cluster))
    finally:
        kafka_local.stop(cluster, log=lambda *_: None)


def test_the_launcher_runs_a_public_cluster_beside_the_producing_one(tmp_path, monkeypatch, capsys):
    """`alertdist kafka start --two-tier`: two real clusters, their own ports, data folders and cluster ids."""
    from alertdist.cli.main import main as cli
    from alertdist.nights.state import cluster_id
    from alertdist.settings import Settings

    (tmp_path / "kafka").mkdir()
    (tmp_path / "kafka" / "libs").symlink_to(Settings.load().kafka_home / "libs", target_is_directory=True)
    producing, public = kafka_local.free_port(), kafka_local.free_port()
    for name, value in (("HOME", tmp_path), ("KAFKA_PORT", producing), ("PUBLIC_KAFKA_PORT", public)):
        monkeypatch.setenv(f"ALERTDIST_{name}", str(value))
    monkeypatch.delenv("ALERTDIST_BOOTSTRAP_SERVERS", raising=False)
    try:
        assert cli(["kafka", "start", "--two-tier"]) == 0
        out = capsys.readouterr().out
        assert f"producing: 127.0.0.1:{producing}" in out and f"public: 127.0.0.1:{public}" in out
        assert len({cluster_id(f"127.0.0.1:{port}") for port in (producing, public)}) == 2
        assert (tmp_path / "kafka" / "nodes").is_dir() and (tmp_path / "kafka-public" / "nodes").is_dir()
        assert cli(["kafka", "status", "--public"]) == 0
        assert cli(["kafka", "stop", "--public"]) == 0
        assert cli(["kafka", "status", "--two-tier"]) == 3  # the producing one still up, the public one down
        assert "public cluster" in capsys.readouterr().out
    finally:
        cli(["kafka", "stop", "--two-tier"])
