"""Alert filters: a plain Python function that says whether one alert passes, run unchanged live and in batch.

A filter takes one alert (a dict, as `alertdist.avro.codec.decode` gives it) and returns ``True``/``False``, or
``(passed, annotations)`` where ``annotations`` is a small JSON-able dict (a score, a class) that travels with
the passing alert. It may declare the top-level fields it reads; the runners then decode only those, which is
what makes a Python filter fast: `decode(packet, fields=("candidate",))` never touches the history or the
cutouts. A filter that needs set-up (a model, a catalogue) is a small class with ``__call__`` and ``setup()``.

    from alertdist.filters import alert_filter

    @alert_filter(name="very_bright", fields=("candidate",))
    def very_bright(alert):
        c = alert["candidate"]
        return c["magpsf"] < 16, {"mag": c["magpsf"]}

A *columnar* filter (``columnar=True``) takes a batch instead: a `pyarrow.Table` with the Parquet archive's
columns (`alertdist.avro.arrow`: candidate fields as top-level columns, ``prv_candidates`` a list of
structs) and returns which rows pass, optionally with annotations; see `alertdist.filters.columnar`. Over years of
archived nights it reads only the ``columns`` it declares (``"prv_candidates.jd"`` reads one leaf of the
history), which is what makes a reanalysis fast. A columnar twin may share a per-alert filter's name: the runners
take it when asked for the columnar path, and both write to the same outputs.

Filters are found by name (`load_filter`): the bundled ones (`alertdist.filters.bundled`) or any importable
``module:function``. The one function both runners call, `AlertFilter.judge`, is why live and batch results
are identical: same decode, same call, same annotation encoding.
"""

from alertdist.filters.plugin import (
    BUNDLED_MODULE,
    ERROR,
    MALFORMED,
    MAX_ANNOTATION_BYTES,
    NAME_PATTERN,
    PASSED,
    REJECTED,
    AlertFilter,
    FilterLookupError,
    FilterSpec,
    Verdict,
    alert_filter,
    annotation_text,
    available_filters,
    load_filter,
    named_filter,
    passed_verdict,
    short_reason,
)

__all__ = [
    "BUNDLED_MODULE",
    "ERROR",
    "MALFORMED",
    "MAX_ANNOTATION_BYTES",
    "NAME_PATTERN",
    "PASSED",
    "REJECTED",
    "AlertFilter",
    "FilterLookupError",
    "FilterSpec",
    "Verdict",
    "alert_filter",
    "annotation_text",
    "available_filters",
    "load_filter",
    "named_filter",
    "passed_verdict",
    "short_reason",
]
