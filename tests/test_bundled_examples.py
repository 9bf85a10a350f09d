"""The bundled filters' examples (doctests on simulated alerts) run as tests, so the documentation cannot rot."""

from __future__ import annotations

import doctest
import io

from alertdist.filters import bundled


def _examples() -> list[doctest.DocTest]:
    return [test for test in doctest.DocTestFinder().find(bundled) if test.examples]


def test_every_bundled_filter_carries_an_example_and_the_module_one_checks_the_twins():
    named = {test.name.rpartition(".")[2] for test in _examples()}
    per_alert = {name for name in bundled.__all__ if not name.endswith("_columnar")}
    assert per_alert == {"bright_transients", "solar_system", "variable_stars"}
    assert named == per_alert | {"bundled"}  # the module's own example compares every columnar twin


def test_the_bundled_filters_examples_hold():
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    out = io.StringIO()
    for test in _examples():
        runner.run(test, out=out.write)
    result = runner.summarize(verbose=False)
    assert result.attempted == 11  # 5 in the module example, 2 in each filter
    assert result.failed == 0, out.getvalue()
