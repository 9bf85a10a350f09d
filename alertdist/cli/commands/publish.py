"""`alertdist topics create`, `alertdist publish` and `alertdist simulate`: the producing half of the system."""

from __future__ import annotations

import argparse
from pathlib import Path

from alertdist.cli import parsing
from alertdist.cli.progress import ProgressLine
from alertdist.jobs.nights import open_night
from alertdist.jobs.publish import publish_night
from alertdist.kafka.signals import stop_on_signals
from alertdist.nights.dates import format_night
from alertdist.nights.topics import TopicSettings
from alertdist.publish.publisher import DEFAULT_MAX_PACKET_BYTES
from alertdist.publish.sources import NIGHT_DONE, SourceSpec, simulated_alerts
from alertdist.settings import Settings

__all__ = ["register"]


def _topic_settings(args) -> TopicSettings:
    return TopicSettings(
        partitions=args.partitions,
        replication_factor=args.replication_factor,
        retention_ms=int(args.retention_days * 86400 * 1000),
    )


def _create_topics(args, settings: Settings) -> int:
    """Create ztf_YYYYMMDD_programidN for each programme, ztf_YYYYMMDD_rejected and the compacted ztf_nights. An
    existing topic is reported as 'exists', with any settings that drifted."""
    for topic, what in open_night(settings, args.night or settings.tonight(), _topic_settings(args)).topics.items():
        print(f"{topic}: {what}")
    return 0


def _source(args) -> SourceSpec:
    if args.drop_folder:
        return SourceSpec("drop-folder", args.drop_folder, done_folder=args.done_folder)
    if args.tarball:
        return SourceSpec("tarball", args.tarball)
    if args.folder:
        return SourceSpec("folder", args.folder)
    return SourceSpec("simulate", alerts=args.simulate, seed=args.seed, speed=args.speed, rate_per_minute=args.rate)


def _publish(args, settings: Settings) -> int:
    """Publish each packet to its programme's topic of the night, unchanged; bad packets go to the night's rejected
    topic with their reason. With --drop-folder the folder is watched live and a file is removed only after Kafka
    acknowledged it; the night ends when the pipeline writes NIGHT_DONE into the folder. At the end the counts must
    reconcile and the night is marked closed with its end offsets. SIGINT/SIGTERM stop cleanly and leave the night
    open."""
    night = args.night or settings.tonight()
    with stop_on_signals() as stop:
        result = publish_night(
            settings,
            night,
            _source(args),
            topics=None if args.no_create_topics else _topic_settings(args),
            check_night=not args.any_night,
            full_check=args.full_check,
            close=not args.no_close,
            reopen=args.reopen,
            max_packet_bytes=args.max_packet_bytes,
            progress=ProgressLine(f"publishing night {format_night(night)}", args.quiet),
            stop=stop,
        )
    delivered = ", ".join(f"programid {p}: {n}" for p, n in sorted(result.delivered.items())) or "none"
    rejected = ", ".join(f"{k}: {n}" for k, n in sorted(result.rejected.items())) or "none"
    print(
        f"night {result.night}: read {result.read}; delivered {result.delivered_total} ({delivered}); "
        f"rejected {result.rejected_total} ({rejected}); {result.elapsed_s:.1f} s, "
        f"{result.rate_alerts_s:.0f} alerts/s, {result.rate_mb_s:.1f} MB/s"
    )
    if result.latency_ms:
        print("latency produced->acknowledged (ms): " + ", ".join(f"{k} {v:.0f}" for k, v in result.latency_ms.items()))
    if result.closed:
        print(f"night {result.night} closed ({sum(sum(p.values()) for p in result.end_offsets.values())} messages)")
    elif result.stopped:
        print(f"stopped: night {result.night} stays open; run the same command again to continue")
    return 0


def _simulate(args, settings: Settings) -> int:
    """Write N simulated ZTF alert packets (schema 4.02, deterministic for a seed) as <candid>.avro files into a
    folder, at real cadence times --speed or as fast as possible, then NIGHT_DONE."""
    from alertdist.simulate.night import write_drop_folder

    night = args.night or settings.tonight()
    folder = Path(args.to)
    line = ProgressLine(f"simulating night {format_night(night)} into {folder}", args.quiet)
    alerts = simulated_alerts(args.alerts, night=night, seed=args.seed)
    counts = write_drop_folder(
        alerts,
        folder,
        speed=args.speed,
        progress=lambda n, _: n % 100 == 0 and line.update(f"{n}/{args.alerts} packets"),
    )
    line.update(
        f"{counts.files} packets, {counts.exposures} exposures, {counts.bytes / 1e6:.1f} MB in {counts.seconds:.1f} s",
        final=True,
    )
    if not args.no_done_marker:
        (folder / NIGHT_DONE).touch()
    print(folder)
    return 0


def _night_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--night",
        metavar="YYYYMMDD",
        type=parsing.night,
        help="the night (default: the one starting this evening or under way at the site, $ALERTDIST_SITE_TIMEZONE)",
    )


def _topic_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--partitions", type=int, default=14, help="partitions per programme topic (default 14, ZTF's)")
    p.add_argument("--replication-factor", type=int, help="default: the cluster size, up to 3")
    p.add_argument("--retention-days", type=float, default=7.0, help="how long Kafka keeps the night (default 7)")


#: `alertdist publish`'s options beside its source, as (flag, add_argument's keywords).
_PUBLISH_OPTIONS = (
    ("--seed", {"type": int, "default": 0, "help": "seed of the simulated night (default 0)"}),
    ("--speed", {"type": float, "help": "with --simulate: release exposures at SPEED x real cadence"}),
    ("--rate", {"type": float, "metavar": "PER_MINUTE", "help": "with --simulate: release alerts evenly at this rate"}),
    (
        "--done-folder",
        {"metavar": "DIR", "help": "with --drop-folder: move published files here instead of deleting them"},
    ),
    ("--any-night", {"action": "store_true", "help": "accept packets whose jd lies in another night"}),
    (
        "--max-packet-bytes",
        {
            "type": int,
            "default": DEFAULT_MAX_PACKET_BYTES,
            "help": f"larger packets are rejected as oversize (default {DEFAULT_MAX_PACKET_BYTES})",
        },
    ),
    (
        "--full-check",
        {
            "action": "store_true",
            "help": "decode every packet whole, not just through candidate (untrusted sources; ~20x the CPU)",
        },
    ),
    ("--no-close", {"action": "store_true", "help": "do not mark the night closed at the end"}),
    ("--reopen", {"action": "store_true", "help": "publish into a night already marked closed"}),
    ("--no-create-topics", {"action": "store_true", "help": "fail if the night's topics do not exist"}),
)


def register(sub: argparse._SubParsersAction) -> None:
    topics = sub.add_parser("topics", help="create a night's Kafka topics")
    actions = topics.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = parsing.command(actions, "create", _create_topics, "create a night's topics (idempotent)", kafka=True)
    _night_option(create)
    _topic_options(create)
    _register_publish(sub)
    _register_simulate(sub)


def _register_publish(sub: argparse._SubParsersAction) -> None:
    pub = parsing.command(
        sub, "publish", _publish, "publish a night's alert packets to Kafka (drop folder, tarball...)", kafka=True
    )
    _night_option(pub)
    what = pub.add_mutually_exclusive_group(required=True)
    what.add_argument("--drop-folder", metavar="DIR", help="watch DIR for *.avro packet files until NIGHT_DONE")
    what.add_argument("--tarball", metavar="FILE|URL", help="a (gzip'd) tarball of packets, streamed")
    what.add_argument("--folder", metavar="DIR", help="every *.avro file of DIR, once")
    what.add_argument("--simulate", type=int, metavar="N", help="a simulated night of N alerts")
    for flag, options in _PUBLISH_OPTIONS:
        pub.add_argument(flag, **options)
    _topic_options(pub)
    parsing.quiet_option(pub)


def _register_simulate(sub: argparse._SubParsersAction) -> None:
    sim = parsing.command(sub, "simulate", _simulate, "write a simulated night of N alert packets into a drop folder")
    sim.add_argument("alerts", type=int, metavar="N", help="number of alerts")
    _night_option(sim)
    sim.add_argument("--to", required=True, metavar="DIR", help="the drop folder")
    sim.add_argument("--speed", type=float, help="release exposures at SPEED x real cadence (default: no waiting)")
    sim.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    sim.add_argument("--no-done-marker", action="store_true", help=f"do not write {NIGHT_DONE} at the end")
    parsing.quiet_option(sim)
