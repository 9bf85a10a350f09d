"""`alertdist clean`: free the room old nights take here (their topics, their local archive files)."""

from __future__ import annotations

import argparse
import sys

from alertdist.cli import parsing
from alertdist.settings import Settings

__all__ = ["register"]


def _clean(args, settings: Settings) -> int:
    """Delete the Kafka topics of every night but the newest --keep (default 1) and, when the archive is a local
    folder, their archive files (tarballs, Parquet, manifest, MD5SUMS lines). Shows what would go and asks first;
    --yes answers for you (needed when there is no terminal to ask on)."""
    from alertdist.jobs.clean import apply_clean, plan_clean

    plan = plan_clean(settings, args.keep)
    print(plan.describe())
    if not plan.dropped:
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            raise ValueError("nothing deleted: confirm with --yes (no terminal to ask on)")
        if input("Delete them? [y/N] ").strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 0
    apply_clean(settings, plan)
    print(
        f"deleted {len(plan.topics)} topic(s) and {len(plan.files)} archive file(s); {plan.bytes / 1e6:,.1f} MB freed"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = parsing.command(
        sub, "clean", _clean, "delete old nights' topics and local archive files (asks first)", kafka=True
    )
    p.add_argument("--keep", type=int, default=1, metavar="N", help="keep the newest N nights (default 1)")
    p.add_argument("--yes", action="store_true", help="do not ask")
