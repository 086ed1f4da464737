"""Every docstring example in the installed package runs (imported by its real name, once)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import transferkit.audio
import transferkit.common
import transferkit.demos
import transferkit.recsys
import transferkit.vision


def _modules() -> list[str]:
    names = []
    for pkg in (transferkit.common, transferkit.vision, transferkit.audio, transferkit.recsys, transferkit.demos):
        names.append(pkg.__name__)
        names += [m.name for m in pkgutil.walk_packages(pkg.__path__, prefix=pkg.__name__ + ".")]
    return sorted(names)


def _has_examples(name: str) -> bool:
    tests = doctest.DocTestFinder().find(importlib.import_module(name))
    return any(t.examples for t in tests)


@pytest.mark.parametrize("name", [n for n in _modules() if _has_examples(n)])
def test_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
