"""`alertdist prometheus start|stop|status` (the local Prometheus, its rules and its targets) and
`alertdist lag show|serve` (every consumer group's lag, once or as the monitor process Prometheus scrapes)."""

from __future__ import annotations

import argparse
import functools
import sys

from alertdist.cli import parsing
from alertdist.infra import prometheus_local
from alertdist.jobs.metrics import serve_metrics
from alertdist.jobs.mirror import mirror_position
from alertdist.kafka.signals import stop_on_signals
from alertdist.metrics.lag import LagMonitor
from alertdist.metrics.monitor import MonitorConfig, run_monitor
from alertdist.settings import Settings


def local_prometheus(settings: Settings) -> prometheus_local.PrometheusServer:
    """The project's Prometheus: data under ``.alertdist/prometheus``, on ``prometheus_port``."""
    return prometheus_local.PrometheusServer(home=settings.prometheus_home, port=settings.prometheus_port)


def _start(args, settings):
    server = local_prometheus(settings)
    prometheus_local.start(server)
    if not args.no_monitor:  # the lag, nights and heartbeat exporter, with the settings this command has
        monitor = [sys.executable, "-m", "alertdist.cli.main", "lag", "serve"]
        prometheus_local.start_monitor(server, monitor + (["--two-tier"] if args.two_tier else []))
    print(f"Prometheus UI at {server.url}; alerts at {server.url}/alerts")


def _stop(args, settings):
    server = local_prometheus(settings)
    prometheus_local.stop_monitor(server)
    prometheus_local.stop(server)


def _status(args, settings):
    server = local_prometheus(settings)
    text = prometheus_local.status(server)
    print(text)
    print(prometheus_local.monitor_status(server))
    return 0 if " up " in text else 3


def _show(args, settings):
    """Every consumer group's lag per topic and partition, in messages and in seconds (the age of the oldest
    record it has not consumed)."""
    monitor = LagMonitor(settings.kafka("admin"), groups=args.groups)
    try:
        lags = monitor.measure()
    finally:
        monitor.close()
    if not lags:
        print("no consumer group has committed offsets" + ("" if args.groups == ".*" else f" matching {args.groups}"))
        return 0
    width = max(len(x.group) for x in lags)
    for x in sorted(lags, key=lambda x: (x.group, x.topic, x.partition)):
        print(f"{x.group:<{width}}  {x.topic}[{x.partition}]  lag {x.messages} messages, {x.seconds():.1f} s")
    return 0


def _serve(args, settings):
    """Measure every consumer group's lag, the nights' states and the heartbeat every few seconds and serve them
    to Prometheus (announced in .alertdist/prometheus/targets) until interrupted."""
    exposition = serve_metrics(settings, "monitor")
    if exposition is not None:
        print(f"metrics at {exposition.url}", flush=True)
    public = settings.public_kafka("admin") if args.two_tier else None
    config = MonitorConfig(
        settings.kafka("admin"),
        settings.naming,
        settings.site,
        public_bootstrap_servers=public,
        interval_s=args.interval,
        groups=args.groups,
        heartbeat=not args.no_heartbeat,
        mirrored=functools.partial(mirror_position, settings) if args.two_tier else None,
    )
    with stop_on_signals() as stop:
        run_monitor(config, stop)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    prom = parsing.actions(
        sub,
        "prometheus",
        "start, stop or check the local Prometheus that scrapes every process of the project",
        [
            ("start", _start, "start Prometheus in the background (reused, its rules reloaded, when already up)"),
            ("stop", _stop, "stop the Prometheus this project started"),
            ("status", _status, "is Prometheus ready? (exit 3 if not)"),
        ],
        description="Data, configuration and the targets folder live in .alertdist/prometheus; the binary is "
        "Debian's prometheus package (apt-get install prometheus).",
    )
    start = parsing.action_parser(prom, "start")
    start.add_argument("--no-monitor", action="store_true", help="do not start the lag monitor (alertdist lag serve)")
    start.add_argument("--two-tier", action="store_true", help="the monitor also reads the public cluster's heartbeat")
    lag = parsing.actions(
        sub,
        "lag",
        "consumer lag of every group, once (show) or served to Prometheus with the heartbeat (serve)",
        [
            ("show", _show, "print every consumer group's lag per topic and partition"),
            ("serve", _serve, "the monitor process: lag, nights and heartbeat as Prometheus metrics"),
        ],
    )
    for action in ("show", "serve"):
        p = parsing.action_parser(lag, action)
        p.add_argument("--groups", default=".*", metavar="REGEX", help="only groups whose id matches (default all)")
        p.set_defaults(needs_kafka=True)
    serve = parsing.action_parser(lag, "serve")
    serve.add_argument("--interval", type=float, default=5.0, help="seconds between measurements (default 5)")
    serve.add_argument(
        "--two-tier",
        action="store_true",
        help="also read the heartbeat back on the public cluster, and measure the mirror's lag",
    )
    serve.add_argument("--no-heartbeat", action="store_true", help="measure only, send no heartbeat")
