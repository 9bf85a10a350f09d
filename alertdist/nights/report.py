"""What an operator wants to see about a night, and the check that every alert is accounted for.

Plain functions over the stages' results (publisher, filters, archive manifest), so the `night` flow only
turns them into Prefect artifacts, and the reconciliation can be tested without running a night.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable

__all__ = [
    "MEASURE",
    "NightReconciliationError",
    "by_measure",
    "checksums_markdown",
    "exposure_counts",
    "exposure_plot_markdown",
    "file_rows",
    "filter_rows",
    "human_bytes",
    "reconcile",
    "stage_rows",
    "summary_rows",
    "throughput_rows",
]


class NightReconciliationError(RuntimeError):
    """Some alert is not accounted for; the message names each mismatch."""


def reconcile(published: dict, filters: dict[str, list[dict]], archived: dict[int, dict]) -> list[str]:
    """Every mismatch between what was published, what each filter consumed and what was archived.

    ``published``: the publish flow's result (``read``, ``delivered`` per programme, ``rejected`` per kind,
    ``closed``). ``filters``: filter name -> the rows of its copies. ``archived``: programid -> the manifest's
    counts for that programme. An empty list means the night balances.
    """
    problems = []
    delivered = {int(p): n for p, n in published.get("delivered", {}).items()}
    rejected = sum(published.get("rejected", {}).values())
    if not published.get("closed"):
        problems.append("the night was not closed by the publisher")
    if published.get("read", 0) != sum(delivered.values()) + rejected:
        problems.append(
            f"publisher read {published.get('read')} but delivered {sum(delivered.values())} + rejected {rejected}"
        )
    for name, rows in filters.items():
        for row in rows:
            settled = row["passed"] + row["rejected"] + row["errors"] + row["malformed"]
            if row["read"] != settled:
                problems.append(f"filter {name} copy {row['copy']} read {row['read']} but settled {settled}")
        lag = [r["lag"] for r in rows if r.get("lag") is not None]
        if not lag or min(lag) != 0:
            problems.append(f"filter {name} did not consume the whole night (lag {min(lag) if lag else 'unknown'})")
    for programid, n in sorted(delivered.items()):
        counts = archived.get(programid)
        if counts is None:
            if n:
                problems.append(f"programme {programid}: {n} alerts published but no archive written")
            continue
        if counts["read"] < n:
            problems.append(
                f"programme {programid}: {n} alerts published but only {counts['read']} read back "
                "from Kafka by the archiver"
            )
        accounted = counts["written"] + counts["duplicates"] + counts.get("rejected", 0)
        if counts["read"] != accounted:
            problems.append(
                f"programme {programid}: archiver read {counts['read']} but wrote {counts['written']} "
                f"+ dropped {counts['duplicates']} duplicates + {counts.get('rejected', 0)} rejected"
            )
    return problems


def summary_rows(
    published: dict, filters: dict[str, list[dict]], archived: dict[int, dict], programmes: dict[int, str]
) -> list[dict]:
    """One row per programme: published, rejected, per-filter passes and errors, archived, duplicates."""
    delivered = {int(p): n for p, n in published.get("delivered", {}).items()}
    rows = []
    for programid, name in sorted(programmes.items()):
        counts = archived.get(programid, {})
        row = {
            "programme": f"{programid} {name}",
            "published": delivered.get(programid, 0),
            "archived": counts.get("written", 0),
            "duplicates dropped": counts.get("duplicates", 0),
            "of which different bytes": counts.get("conflicting_duplicates", 0),
        }
        for filter_name, copies in filters.items():
            per = _per_programme(copies, programid)
            row[f"{filter_name} passed / errors"] = f"{per.get('passed', 0)} / {per.get('errors', 0)}"
        rows.append(row)
    total_rejected = sum(published.get("rejected", {}).values())
    rows.append({"programme": "rejected (all)", "published": total_rejected})
    return rows


#: The name of `by_measure`'s first column (a column named "" shows blank in the Prefect UI's tables).
MEASURE = "measure"


def by_measure(rows: list[dict], first: str = "programme") -> list[dict]:
    """`summary_rows` turned on its side: one row per measure, one column per programme. A column per filter grew
    the table past a 1,600 px page with three filters; a row per filter keeps it narrow whatever their number."""
    columns = [str(row[first]) for row in rows]
    measures = list(dict.fromkeys(key for row in rows for key in row if key != first))
    return [{MEASURE: m, **{c: row.get(m, "") for c, row in zip(columns, rows)}} for m in measures]


def _per_programme(copies: list[dict], programid: int) -> dict:
    """Per-programme counts when the runner reports them (``by_programme``), else nothing."""
    totals: dict[str, int] = {}
    for row in copies:
        for key, value in row.get("by_programme", {}).get(str(programid), {}).items():
            totals[key] = totals.get(key, 0) + value
    return totals


def filter_rows(filters: dict[str, list[dict]]) -> list[dict]:
    """Per filter: read, passed, errors and the group's final consumer lag."""
    rows = []
    for name, copies in filters.items():
        lag = [c["lag"] for c in copies if c.get("lag") is not None]
        rows.append(
            {
                "filter": name,
                "copies": len(copies),
                "read": sum(c["read"] for c in copies),
                "passed": sum(c["passed"] for c in copies),
                "errors": sum(c["errors"] for c in copies),
                "final lag": min(lag) if lag else "unknown",
            }
        )
    return rows


def human_bytes(n: int) -> str:
    """``1.5 MB``: sizes as an operator reads them (decimal units, as the CLI prints MB/s)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:,} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def file_rows(files: list[dict], hash_chars: int = 12) -> list[dict]:
    """The archive's files as a table narrow enough to read: sizes in kB/MB, hashes cut to ``hash_chars``; the
    full ones stay in ``files`` (and the manifest)."""
    return [
        {
            "programme": f["programme"],
            "file": f["file"],
            "size": human_bytes(f["bytes"]),
            "sha256": f["sha256"][:hash_chars] + "…",
            "md5": f["md5"][:hash_chars] + "…" if f["md5"] else "",
        }
        for f in files
    ]


def checksums_markdown(files: list[dict], title: str) -> str:
    """Every file's full sha256 and size in bytes, as ``sha256sum -c`` reads them (the table shows them cut)."""
    lines = "\n".join(f"{f['sha256']}  {f['file']}" for f in files)
    sizes = "\n".join(f"{f['bytes']:>14,}  {f['file']}" for f in files)
    return f"### {title}\n\n```\n{lines}\n```\n\nSizes in bytes:\n\n```\n{sizes}\n```\n"


def throughput_rows(published: dict) -> list[dict]:
    rows = [
        {"measure": "pace", "value": published.get("pace", "unknown")},
        {"measure": "publish rate (alerts/s, at that pace)", "value": round(published.get("rate_alerts_s", 0.0), 1)},
        {"measure": "publish rate (MB/s)", "value": round(published.get("rate_mb_s", 0.0), 2)},
    ]
    for key, value in published.get("latency_ms", {}).items():
        rows.append({"measure": f"latency produced->acknowledged {key} (ms)", "value": round(value, 1)})
    return rows


def stage_rows(stages: dict[str, dict], alerts: int) -> list[dict]:
    """Per stage: the process it ran in, how long it ran, its CPU time (in all and per alert of the night) and its
    peak memory."""
    return [
        {
            "stage": name,
            "pid": usage["pid"],
            "wall (s)": usage["wall_s"],
            "CPU (s)": usage["cpu_s"],
            "CPU per alert (ms)": round(1000.0 * usage["cpu_s"] / alerts, 3) if alerts else None,
            "peak RSS (MB)": usage["peak_rss_mb"],
        }
        for name, usage in stages.items()
    ]


def exposure_counts(jds: Iterable[float], programids: Iterable[int]) -> dict[float, dict[int, int]]:
    """Alerts per exposure (keyed by its ``jd``) and programme."""
    counts: dict[float, dict[int, int]] = {}
    for jd, programid in zip(jds, programids):
        per = counts.setdefault(jd, {})
        per[programid] = per.get(programid, 0) + 1
    return dict(sorted(counts.items()))


def plot_top(totals: list[int]) -> float:
    """The y limit of the exposure plot: a quarter above the tallest bar, so it never touches the frame (and the
    legend, upper right, sits above the bars)."""
    return max(max(totals, default=0) * 1.25, 1)


def exposure_plot_markdown(counts: dict[float, dict[int, int]], programmes: dict[int, str], title: str) -> str:
    """A stacked bar chart of alerts per exposure through the night, as markdown embedding a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    jds = list(counts)
    start = jds[0] if jds else 0.0
    hours = [(jd - start) * 24 for jd in jds]
    fig, ax = plt.subplots(figsize=(9, 3.2), dpi=90)
    bottom = [0] * len(jds)
    width = min(0.01, (max(hours) - min(hours)) / max(len(hours), 1) * 0.8) if len(hours) > 1 else 0.01
    for programid, name in sorted(programmes.items()):
        heights = [counts[jd].get(programid, 0) for jd in jds]
        ax.bar(hours, heights, width=width, bottom=bottom, label=f"{programid} {name}")
        bottom = [b + h for b, h in zip(bottom, heights)]
    ax.set_ylim(0, plot_top(bottom))
    ax.set_xlabel("hours since the first exposure")
    ax.set_ylabel("alerts per exposure")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    encoded = base64.b64encode(buffer.getvalue()).decode()
    total = sum(sum(c.values()) for c in counts.values())
    return (
        f"### {title}\n\n{len(counts)} exposures, {total} alerts.\n\n"
        f"![alerts per exposure](data:image/png;base64,{encoded})\n"
    )
