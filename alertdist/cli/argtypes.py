"""Argument types every command shares: a night and a list of programme ids, refused with the form expected."""

from __future__ import annotations

import argparse
import datetime as dt

from alertdist.nights.dates import parse_night

__all__ = ["night", "programme_ids"]


def night(text: str) -> dt.date:
    try:
        return parse_night(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def programme_ids(text: str) -> list[int]:
    try:
        return sorted({int(p) for p in text.split(",") if p.strip()})
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected programme ids like 1,2 (got {text!r})") from e
