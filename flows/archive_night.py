"""Archive a closed night at dawn: UW-layout tarballs, Parquet, a manifest and MD5SUMS, verified against Kafka.

The same pipelined archiver as `alertdist archive` (what `bench/archive.py` measures), as one task retried on
transient trouble.
"""

from __future__ import annotations

from prefect import flow

from alertdist.archive import ArchiveOptions
from alertdist.nights.dates import Night
from alertdist.settings import Settings
from alertdist.tasks.archive import archive_night as archive
from alertdist.tasks.policy import run_label


@flow(name="archive-night", flow_run_name=run_label("archive", "night"))
def archive_night(
    night: Night | None = None,
    dest: str | None = None,
    programmes: list[int] | None = None,
    bootstrap_servers: str | None = None,
    survey: str | None = None,
    public_bootstrap_servers: str | None = None,
    work_dir: str | None = None,
    row_group_rows: int = 10_000,
    partial: bool = False,
) -> dict:
    """Archive ``night`` (YYYYMMDD; default the night now ending at the site) to ``dest`` (default the settings').
    An aborted night is refused unless ``partial`` (then its manifest says the archive is partial)."""
    settings = Settings.load(
        bootstrap_servers=bootstrap_servers,
        survey=survey,
        public_bootstrap_servers=public_bootstrap_servers,
        archive_url=dest,
    )
    settings = settings.downstream() if public_bootstrap_servers else settings  # the two-tier mode's readers
    options = ArchiveOptions(work_dir=work_dir, row_group_rows=row_group_rows)
    return archive(settings, night or settings.tonight(), settings.archive, programmes, options, partial)
