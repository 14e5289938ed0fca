"""The examples in docstrings run, so they say what the code does today.

Every module under `synthdsl` is found with `pkgutil.walk_packages` (a module moved or split
is picked up as it is), imported, and its doctests (`doctest.DocTestFinder`) run with
`doctest.DocTestRunner`; one test per module, and a failing example fails it with doctest's
report. `python -m doctest` would run the same examples the same way.
"""

from __future__ import annotations

import doctest
import importlib
import io
import pkgutil

import pytest

import synthdsl

_UNWALKABLE: list[str] = []


def _modules() -> list[str]:
    names = ["synthdsl"]
    for info in pkgutil.walk_packages(synthdsl.__path__, "synthdsl.",
                                      onerror=_UNWALKABLE.append):
        if info.name.rsplit(".", 1)[-1] == "__main__":  # importing it would run the command
            continue
        names.append(info.name)
    return sorted(names)


MODULES = _modules()


def _doctests(name: str) -> list[doctest.DocTest]:
    module = importlib.import_module(name)
    return [t for t in doctest.DocTestFinder(exclude_empty=True).find(module, name)
            if t.examples]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str, one_thread) -> None:
    """The module imports, and every example in it gives what its docstring says."""
    tests = _doctests(name)
    runner = doctest.DocTestRunner()
    report = io.StringIO()
    for test in tests:
        runner.run(test, out=report.write)
    assert runner.failures == 0, f"{runner.failures} of {runner.tries} examples in {name} " \
                                 f"failed:\n{report.getvalue()}"
    assert runner.tries == sum(len(t.examples) for t in tests)


def test_every_package_can_be_walked() -> None:
    assert not _UNWALKABLE, f"packages that failed to import: {_UNWALKABLE}"


def test_the_doctests_are_found() -> None:
    """At least the examples that exist today: the package, the façade, the graph, the
    check, the frozen-prefix cache, the front end and the pictures."""
    found = {name: sum(len(t.examples) for t in _doctests(name)) for name in MODULES}
    found = {name: n for name, n in found.items() if n}
    for name in ("synthdsl", "synthdsl.pipeline", "synthdsl.lang.parse", "synthdsl.lang.ast",
                 "synthdsl.lang.errors", "synthdsl.lang.printer"):
        assert found.get(name), f"no doctests found in {name}"
    for package in ("synthdsl.graph", "synthdsl.checks", "synthdsl.train", "synthdsl.viz",
                    "synthdsl.library"):
        assert any(n == package or n.startswith(package + ".") for n in found), \
            f"no doctests found under {package}"
    assert any(n.startswith("synthdsl.train.") and "frozen" in n for n in found)
    assert len(found) >= 15 and sum(found.values()) >= 60, found
