"""`alertdist night`: run one whole night end to end through the `night` flow (the README's main job)."""

from __future__ import annotations

import argparse
import os
import sys

from alertdist.cli import parsing
from alertdist.cli.commands.kafka import secure_cluster, with_libs
from alertdist.cli.commands.prefect_server import local_server
from alertdist.filters import named_filter
from alertdist.infra import kafka_local, prefect_local
from alertdist.jobs import mirror
from alertdist.jobs.logins import logins_out_of_environment
from alertdist.jobs.nights import fresh_night
from alertdist.jobs.secure import register_filters, register_services, register_two_tier_services
from alertdist.nights.dates import format_night
from alertdist.security import ADMIN
from alertdist.settings import Settings, login_variable


def _secure(settings: Settings, *, two_tier: bool = False, plugins: list[str] = ()) -> Settings:
    """Start (or reuse) the local secure deployment, register the services (and the ``plugins``' filters, by the
    names they are started as), and hand them their logins; with ``two_tier`` a secured pair: the public cluster
    beside it, each cluster with only its own users.

    The logins go into this process's environment only: every process it starts (the brokers, the Prefect server,
    the mirror, the night's stage processes) is started without them (`alertdist.jobs.logins`), and the `night`
    flow hands each stage its own service's login alone, never as a flow parameter."""
    kafka_local.install(settings.kafka_home / "libs")
    clusters = [
        with_libs(secure_cluster(settings, public=public), settings) for public in (False, True)[: 1 + two_tier]
    ]
    for public, cluster in enumerate(clusters):
        with logins_out_of_environment():
            kafka_local.start(cluster, log=lambda text: print(text, file=sys.stderr))
        tier = "PUBLIC_" if public else ""
        os.environ.update(
            {
                f"ALERTDIST_{tier}BOOTSTRAP_SERVERS": cluster.bootstrap_servers,
                f"ALERTDIST_{tier}KAFKA_CA": str(cluster.ca_location),
                login_variable(ADMIN, public=bool(public)): cluster.password("admin"),
            }
        )
    register = register_two_tier_services if two_tier else register_services
    os.environ.update(register(Settings.load(), clusters[0].home / "secrets"))
    if plugins:
        os.environ.update(register_filters(Settings.load(), plugins, clusters[0].home / "secrets", public=two_tier))
    secured = Settings.load()
    server = local_server(secured, secure=True)
    with logins_out_of_environment():
        prefect_local.start(server, log=lambda text: print(text, file=sys.stderr))
    os.environ.update(server.client_env())
    return secured


def _run(args, settings: Settings) -> int:
    """Runs the `night` flow: create the night's topics, start the bundled filters, publish a simulated night (or
    --source), close it, let the filters drain, archive to Avro tarballs + Parquet, verify, and report in the
    Prefect UI. With --secure: on the local secure deployment (no PLAINTEXT listener; each service its own SCRAM
    user; the Prefect server behind basic auth)."""
    plugins = [name for name, spec in map(named_filter, args.filter or ()) if name is not None and name != spec]
    if args.secure:
        settings = _secure(settings, two_tier=args.two_tier, plugins=plugins)
    server = local_server(settings, secure=args.secure)
    if not os.environ.get("PREFECT_API_URL"):
        os.environ.update(server.client_env())  # Prefect's own client settings, before it is imported
    from alertdist.flows.night import night

    source = args.source or f"simulate:{args.alerts}:{args.seed}"
    if args.two_tier:
        with logins_out_of_environment():  # its own login is in its properties file
            started = mirror.start_mirror(settings)
        print(f"{started}: {settings.bootstrap_servers} -> {settings.public_bootstrap_servers}")
    chosen = args.night or fresh_night(settings)  # named before the run, so the run is named by it
    why = "" if args.night else " (the latest night this cluster has not run yet; --night YYYYMMDD to choose)"
    print(
        f"Running night {format_night(chosen)}{why} from {source} on Kafka {settings.bootstrap_servers}; "
        f"progress below, details in the Prefect UI at {server.ui_url}",
        file=sys.stderr,
    )
    print("Starting the stages (topics, filters, publisher, archiver; a process each, ~20 s)...", file=sys.stderr)
    state = night(
        night=chosen,
        source=source,
        speed=args.speed,
        filters=args.filter,
        filter_parallelism=args.filter_copies,
        filter_deadline_s=args.filter_deadline,
        dest=args.archive or settings.archive,
        partitions=args.partitions,
        bootstrap_servers=settings.bootstrap_servers,
        survey=settings.survey,
        public_bootstrap_servers=settings.public_bootstrap_servers if args.two_tier else None,
        return_state=True,
    )
    run_url = (
        f"{os.environ.get('PREFECT_API_URL', '').removesuffix('/api')}/runs/flow-run/{state.state_details.flow_run_id}"
    )
    if not state.is_completed():
        print(f"\nThe night FAILED: {state.message}\nSee {run_url}", file=sys.stderr)
        return 1
    result = state.result()
    print(
        f"\nNight {result['night']}: {result['published']} alerts published, {result['archived']} archived "
        f"({result['duplicates']} duplicates dropped); filter passes: "
        + ", ".join(f"{k} {v}" for k, v in result["filters"].items())
    )
    if args.two_tier:
        print(
            f"Two-tier: published to {settings.bootstrap_servers}, {result['mirrored']} alerts mirrored to "
            f"{settings.public_bootstrap_servers} and the night closed there; filters and archive read there"
        )
    print(f"Archive:  {result['archive']}  (manifest {result['manifest']})")
    print(f"Prefect UI: {run_url}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = parsing.command(
        sub, "night", _run, "run one whole night end to end (topics, filters, publish, archive, verify)"
    )
    p.add_argument(
        "--night",
        type=parsing.night,
        help="YYYYMMDD (default: tonight at the site, or the latest earlier night the cluster has not run yet, so "
        "a second run the same day runs a new night)",
    )
    p.add_argument("--alerts", type=int, default=3000, help="size of the simulated night (default 3000)")
    p.add_argument("--seed", type=int, default=1, help="simulation seed (same seed, same night)")
    p.add_argument(
        "--speed", type=float, help="replay the simulated cadence this many times faster (default: as fast as possible)"
    )
    p.add_argument("--source", help="instead of simulating: a drop folder, a tarball, or simulate:N[:SEED]")
    p.add_argument("--filter-copies", type=int, default=1, help="copies of each filter (consumer-group members)")
    p.add_argument(
        "--filter",
        action="append",
        metavar="FILTER",
        help="a filter to run live (repeat for more; default: every bundled one): a bundled name, or your plug-in "
        "as NAME=package.module:function (with --secure it logs in as its own user, filter_NAME); a plug-in runs "
        "confined (no login, no network, no access to the home) in a process of its own",
    )
    p.add_argument(
        "--filter-deadline",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="time a filter has to judge one batch of alerts (default 10): the alerts it has not judged by then are "
        "errors (in its errors topic), its process is restarted; three such batches in a row stop the filter",
    )
    parsing.archive_option(
        p, "archive root to write the night to (default $ALERTDIST_ARCHIVE_URL or .alertdist/archive)"
    )
    p.add_argument("--partitions", type=int, default=14, help="partitions per programme topic (default 14)")
    p.add_argument(
        "--two-tier",
        action="store_true",
        help="publish to the producing cluster and read (filters, archive) from the public one, "
        "$ALERTDIST_PUBLIC_BOOTSTRAP_SERVERS (default: `alertdist kafka start --public`), across MirrorMaker 2 "
        "(started if not running)",
    )
    p.add_argument(
        "--secure",
        action="store_true",
        help="on the local secure deployment (`alertdist kafka start --secure-only`, started if needed): every "
        "service logs in as its own SCRAM user over TLS, and the Prefect server asks for basic auth; with --two-tier a "
        "secured pair (the public one on $ALERTDIST_PUBLIC_KAFKA_PORT + 300), each cluster with only its own users",
    )
