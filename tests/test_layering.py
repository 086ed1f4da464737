"""Layering: no module of the library imports another module's private (``_name``) names."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "vision", "audio", "recsys", "demos")


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(node: ast.ImportFrom, here: str, is_package: bool) -> str:
    if node.level == 0:
        return (node.module or "").removeprefix("transferkit.")
    base = here.split(".") if is_package else here.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def private_imports() -> list[str]:
    """``file:line: from x import _y`` for every private name one module takes from another."""
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            here = _module(path)
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if not isinstance(node, ast.ImportFrom):
                    continue
                source = _resolve(node, here, path.name == "__init__.py")
                for alias in node.names:
                    ours = source.split(".")[0] in PACKAGES
                    if ours and alias.name.startswith("_") and not alias.name.startswith("__") and source != here:
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno}: from {source} import {alias.name}")
    return found


def test_the_checker_sees_a_private_import(tmp_path):
    tree = ast.parse("from .report import _pyplot\nfrom .task import TransferTask\n")
    nodes = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert [_resolve(n, "common.search", False) for n in nodes] == ["common.report", "common.task"]


def test_no_module_imports_another_modules_private_names():
    assert private_imports() == []
