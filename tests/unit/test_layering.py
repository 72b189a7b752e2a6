"""Imports only go downward: dags -> pipeline -> {provider, warehouse}; warehouse -> provider's types.

Walks the source with ``ast`` (every import, module-level or inside a function) and fails on an
import that goes up a layer or sideways into tooling. The tools (``tiktok_local``, ``tools/``) and
the simulator (``tiktok_sim``) may import anything; nothing that ships imports them.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Where each top-level name lives (first match wins).
SOURCE_DIRS = ("plugins", "include", "dags")
TOOLING = frozenset({"tiktok_local", "tools", "tiktok_sim"})
OURS = frozenset(
    {"tiktok_provider", "tiktok_warehouse", "tiktok_pipeline", "tiktok_accounts", "tiktok_ops", "dags", *TOOLING}
)
#: The provider modules the warehouse may use: the token store protocol and its types, the error
#: bases, the single sanitiser and the field list.
PROVIDER_TYPES = frozenset(
    {"tiktok_provider.auth", "tiktok_provider.sanitize", "tiktok_provider.fields", "tiktok_provider.errors"}
)
#: What each package may not import (besides the tooling, which no shipped package imports).
FORBIDDEN = {
    "tiktok_provider": OURS - {"tiktok_provider"},
    "tiktok_warehouse": frozenset({"tiktok_pipeline", "tiktok_accounts", "dags"}),
    "tiktok_pipeline": frozenset({"tiktok_accounts", "dags"}),
    "tiktok_ops": frozenset({"tiktok_pipeline", "tiktok_accounts", "dags"}),
    "tiktok_accounts": frozenset({"dags"}),
    "dags": frozenset(),
}


def _package(path: Path) -> str:
    rel = path.relative_to(ROOT).parts
    return "dags" if rel[0] == "dags" else rel[1]


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every absolute module name ``path`` imports, with its line (``from x import y`` gives x.y too)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def _sources() -> list[Path]:
    return sorted(p for d in SOURCE_DIRS for p in (ROOT / d).rglob("*.py"))


def violations() -> list[str]:
    found: dict[str, str] = {}
    for path in _sources():
        package = _package(path)
        if package in TOOLING:
            continue
        forbidden = FORBIDDEN.get(package, frozenset()) | TOOLING
        for line, name in _imports(path):
            top = name.split(".")[0]
            where = f"{path.relative_to(ROOT)}:{line}"
            if top in forbidden and top != package:
                found.setdefault(where, f"{where} imports {name}")
            elif package == "tiktok_warehouse" and top == "tiktok_provider":
                module = ".".join(name.split(".")[:2])
                if module not in PROVIDER_TYPES and name not in PROVIDER_TYPES:
                    found.setdefault(
                        where, f"{where} imports {name}: the warehouse may use only {sorted(PROVIDER_TYPES)}"
                    )
    return sorted(found.values())


def test_imports_only_go_downward() -> None:
    assert violations() == []


@pytest.mark.parametrize(
    ("package", "source", "upward"),
    [
        ("tiktok_provider", "from tiktok_warehouse.tokens import TokenStore\n", True),
        ("tiktok_provider", "def f():\n    import tiktok_pipeline.names\n", True),
        ("tiktok_warehouse", "from tiktok_provider.hooks.tiktok import TikTokDisplayHook\n", True),
        ("tiktok_warehouse", "from tiktok_provider.auth import TokenGrant\n", False),
        ("tiktok_warehouse", "from tiktok_pipeline.names import TIKTOK_CONN_ID\n", True),
        ("tiktok_pipeline", "from tiktok_local import settings\n", True),
        ("tiktok_pipeline", "from tiktok_warehouse.loads import Warehouse\n", False),
    ],
)
def test_the_walk_sees_an_upward_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, package: str, source: str, upward: bool
) -> None:
    fake = tmp_path / ("plugins" if package == "tiktok_provider" else "include") / package / "mod.py"
    fake.parent.mkdir(parents=True)
    fake.write_text(source)
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    for d in ("plugins", "include", "dags"):
        (tmp_path / d).mkdir(exist_ok=True)
    assert bool(violations()) is upward
