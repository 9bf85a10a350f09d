"""What a filter is and how one is found: `alert_filter` marks one, `load_filter` finds it by name, and
`AlertFilter.judge` turns one packet into a `Verdict` (the one call both runners make, so live and batch agree).
The package's docstring (`alertdist.filters`) is the guide for writing one.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from alertdist.avro.codec import AlertPacketError, decode

BUNDLED_MODULE = "alertdist.filters.bundled"
#: A filter's name becomes part of Kafka topic and group names, so it must be safe there.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_SPEC_ATTRIBUTE = "__alert_filter__"
_MAX_REASON = 300  # error reasons go into Kafka headers: keep them readable, not a whole traceback
#: Annotations travel in a Kafka header of every passing alert: larger ones make that alert an ERROR, with why.
MAX_ANNOTATION_BYTES = 64 * 1024

PASSED = "passed"
REJECTED = "rejected"
ERROR = "error"  # the filter raised or returned something unusable
MALFORMED = "malformed"  # the packet could not be decoded: not the filter's fault


class FilterLookupError(LookupError):
    """No filter by that name, or the named object is not usable as a filter."""


@dataclass(frozen=True)
class FilterSpec:
    """What `@alert_filter` attaches to a function or class: its public name and the fields it reads."""

    name: str | None = None
    fields: tuple[str, ...] | None = None
    columnar: bool = False
    columns: tuple[str, ...] | None = None


def alert_filter(
    name: str | None = None,
    *,
    fields: Iterable[str] | None = None,
    columnar: bool = False,
    columns: Iterable[str] | None = None,
):
    """Mark a function or class as an alert filter; returns it unchanged, so it stays callable in tests.

    Parameters
    ----------
    name : str, optional
        Public name (used in topic names: letters, digits, ``._-``). Default: the function or class name.
    fields : iterable of str, optional
        Top-level alert fields the filter reads (e.g. ``("objectId", "candidate")``). Default: all fields,
        which means decoding the history and the cutouts of every alert: about 20 times slower.
    columnar : bool
        The filter takes a `pyarrow.Table` of many alerts, not one alert (see `alertdist.filters.columnar`).
    columns : iterable of str, optional
        For a columnar filter, the archive columns it reads (``"magpsf"``, ``"prv_candidates.jd"``); ``candid``,
        ``objectId`` and ``programid`` are always there. Default: every column, cutouts included.
    """
    if callable(name) and fields is None:  # used bare: @alert_filter
        return alert_filter()(name)
    fields, columns = _names("fields", fields), _names("columns", columns)
    if columns is not None and not columnar:
        raise TypeError("columns= is for columnar filters (columnar=True); a per-alert filter declares fields=")

    def mark(obj):
        setattr(obj, _SPEC_ATTRIBUTE, FilterSpec(name, fields, columnar, columns))
        return obj

    return mark


def _names(what: str, names: Iterable[str] | None) -> tuple[str, ...] | None:
    if isinstance(names, str):
        raise TypeError(f"{what} must be a tuple of names, not the string {names!r}")
    return None if names is None else tuple(names)


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome for one alert: `outcome` is passed, rejected, error or malformed.

    `annotations` is the JSON text sent in the ``alertdist.annotations`` header (only for passed alerts);
    `reason` says why an alert errored or could not be decoded.
    """

    outcome: str
    annotations: bytes = b"{}"
    reason: str = ""


_REJECTED = Verdict(REJECTED)
_PASSED_PLAIN = Verdict(PASSED)


class AlertFilter:
    """A filter ready to run: its name, the fields to decode (or columns to read), and the callable (set up once)."""

    def __init__(
        self,
        name: str,
        function: Callable[[dict], object],
        fields: tuple[str, ...] | None,
        description: str = "",
        origin: str = "",
        *,
        columnar: bool = False,
        columns: tuple[str, ...] | None = None,
    ):
        if not NAME_PATTERN.fullmatch(name):
            raise FilterLookupError(
                f"filter name {name!r} cannot be used in Kafka topic names: use letters, digits, '.', '_', '-' "
                "(give one with @alert_filter(name=...))"
            )
        self.name = name
        self.function = function
        self.fields = fields
        self.description = description
        self.origin = origin
        self.columnar, self.columns = columnar, columns  # a columnar filter reads columns, not fields

    def __repr__(self) -> str:
        kind = f"columns={self.columns!r}" if self.columnar else f"fields={self.fields!r}"
        return f"AlertFilter({self.name!r}, {kind}, origin={self.origin!r})"

    def judge(self, packet: bytes) -> Verdict:
        """Decode the declared fields of one packet, run the filter on them, and say what happened.

        Never raises for a bad packet or a failing filter: both become a verdict with a reason, so one bad
        alert cannot stop a night.
        """
        if self.columnar:
            raise TypeError(f"filter {self.name!r} is columnar: run it on tables (alertdist.filters.columnar)")
        try:
            alert = decode(packet, self.fields)
        except AlertPacketError as e:
            return Verdict(MALFORMED, reason=short_reason(f"undecodable packet: {e}"))
        try:
            result = self.function(alert)
        except Exception as e:  # a plug-in may raise anything; it is recorded, not propagated
            return Verdict(ERROR, reason=short_reason(f"{type(e).__name__}: {e}"))
        if result is True or result is False:
            return _PASSED_PLAIN if result else _REJECTED
        return _verdict_of(result)


def _verdict_of(result: object) -> Verdict:
    """The slow path of `judge`: numpy booleans and ``(passed, annotations)`` pairs."""
    annotations = None
    if isinstance(result, tuple) and len(result) == 2:
        result, annotations = result
    if isinstance(result, np.bool_):
        result = bool(result)
    if result is not True and result is not False:
        return Verdict(
            ERROR,
            reason=short_reason(
                f"filter returned {type(result).__name__} {result!r:.60}; expected True/False or (bool, dict)"
            ),
        )
    if not result:
        return _REJECTED
    if annotations is None:
        return _PASSED_PLAIN
    if not isinstance(annotations, dict):
        return Verdict(ERROR, reason=f"annotations must be a dict, got {type(annotations).__name__}")
    try:
        text = annotation_text(annotations)
    except (TypeError, ValueError) as e:
        return Verdict(ERROR, reason=short_reason(f"annotations are not JSON (no NaN/inf, plain values only): {e}"))
    return passed_verdict(text)


def passed_verdict(annotations: bytes, *, checked: bool = True) -> Verdict:
    """The verdict of a passing alert with these annotations (JSON text), or ERROR if they exceed
    `MAX_ANNOTATION_BYTES`. ``checked=False``: the text comes from untrusted code (a confined plug-in's process)
    and must also prove to be one JSON object."""
    if len(annotations) > MAX_ANNOTATION_BYTES:
        return Verdict(
            ERROR,
            reason=f"annotations are {len(annotations)} bytes, over the cap of {MAX_ANNOTATION_BYTES} bytes an alert: "
            "send a smaller summary (scores, a class), not data",
        )
    if annotations == b"{}":
        return _PASSED_PLAIN
    if not checked:
        try:
            if not isinstance(json.loads(annotations), dict):
                raise ValueError("not an object")
        except ValueError as e:  # UnicodeDecodeError and JSONDecodeError included
            return Verdict(ERROR, reason=short_reason(f"annotations are not a JSON object: {e}"))
    return Verdict(PASSED, annotations=annotations)


def annotation_text(annotations: dict) -> bytes:
    """The one JSON encoding of annotations (sorted keys, no NaN), per-alert and columnar alike."""
    return json.dumps(annotations, sort_keys=True, separators=(",", ":"), allow_nan=False, default=_plain).encode()


def _plain(value: object) -> object:
    """JSON for numpy scalars and arrays, the values filters most often compute."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} {value!r:.40} is not JSON serializable")


def short_reason(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 3] + "..."


# ------------------------------------------------------------------------------------------------ lookup


def _bundled() -> list[tuple[str, str, object, FilterSpec]]:
    """(name, attribute, object, spec) of every bundled filter, per-alert and columnar."""
    module = importlib.import_module(BUNDLED_MODULE)
    found = []
    for attribute in module.__all__:
        obj = getattr(module, attribute)
        spec = getattr(obj, _SPEC_ATTRIBUTE, None)
        if spec is not None:
            found.append((spec.name or obj.__name__, attribute, obj, spec))
    return found


def named_filter(text: str) -> tuple[str | None, str]:
    """``NAME=package.module:function`` -> (NAME, the plug-in); a bundled name -> (it, it); a bare plug-in ->
    (None, it): its name is what it declares. An operator names a plug-in to bind it to its login
    (``filter_NAME``): a plug-in that declares another name is refused, it cannot take another filter's login."""
    name, sep, spec = text.partition("=")
    if not sep:
        return (None, text) if ":" in text else (text, text)
    if not NAME_PATTERN.fullmatch(name) or not spec:
        raise FilterLookupError(f"{text!r}: expected NAME=package.module:function with NAME of letters, digits, ._-")
    return name, spec


def available_filters(columnar: bool = False) -> dict[str, FilterSpec]:
    """The bundled filters by name, with what they declare (the per-alert ones, or the columnar ones)."""
    return {name: spec for name, _, _, spec in _bundled() if spec.columnar == columnar}


def load_filter(name: str, *, columnar: bool = False) -> AlertFilter:
    """A ready-to-run filter: a bundled one by name, or ``package.module:function`` (or ``:Class``).

    ``columnar``: for a bundled name, True takes its columnar version, else its per-alert one; a ``module:function`` is
    what it is, but asking for a columnar one and finding a per-alert one is an error. A class is instantiated without
    arguments and its ``setup()`` called, once per runner (each live copy gets its own instance). Raises
    `FilterLookupError` naming what was tried and what exists.
    """
    if ":" in name:
        module_name, _, attribute = name.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise FilterLookupError(f"cannot import {module_name!r} to load filter {name!r}: {e}") from e
        obj = module
        for part in attribute.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                raise FilterLookupError(f"module {module_name!r} has no {attribute!r} (looking up filter {name!r})")
        loaded = _prepare(obj, origin=name)
        if columnar and not loaded.columnar:
            raise FilterLookupError(f"filter {name!r} is per-alert; declare it with @alert_filter(columnar=True)")
        return loaded
    for found, attribute, obj, spec in _bundled():
        if found == name and spec.columnar == columnar:
            return _prepare(obj, origin=f"{BUNDLED_MODULE}:{attribute}")
    kind = "columnar " if columnar else ""
    raise FilterLookupError(
        f"no bundled {kind}filter named {name!r}; bundled: {', '.join(sorted(available_filters(columnar)))}; "
        "or name your own as package.module:function"
    )


def _prepare(obj: object, origin: str) -> AlertFilter:
    spec = getattr(obj, _SPEC_ATTRIBUTE, None) or FilterSpec()
    description = (obj.__doc__ or "").strip()
    name = spec.name or getattr(obj, "__name__", "")
    if isinstance(obj, type):
        try:
            instance = obj()
            if callable(getattr(instance, "setup", None)):
                instance.setup()
        except Exception as e:
            raise FilterLookupError(f"setting up filter {origin!r} failed: {type(e).__name__}: {e}") from e
        function = instance
    else:
        function = obj
    if not callable(function):
        raise FilterLookupError(f"{origin!r} is a {type(obj).__name__}, not a function or a class with __call__")
    return AlertFilter(name, function, spec.fields, description, origin, columnar=spec.columnar, columns=spec.columns)
