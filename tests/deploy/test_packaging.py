"""What ships: the wheel holds the provider, the warehouse (with its migrations), the pipeline and ops.

Not the tools (demo, `make up`, bench, soak, the embedded Postgres server), not the simulator (its
own distribution, simulator/pyproject.toml), not the benchmark. The wheel is built from this
checkout (``TIKTOK_PACKAGING_SOURCE`` names another tree to build, e.g. an older checkout).
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tiktok_ops.settings import ROOT

SHIPPED = ("tiktok_provider", "tiktok_warehouse", "tiktok_pipeline", "tiktok_ops")
NOT_SHIPPED = ("tiktok_tools", "tiktok_sim", "tiktok_local", "bench")


def build_wheel(source: Path, out: Path) -> Path:
    """Build the wheel of ``source`` (a copy of it, so the checkout gets no build/ or egg-info)."""
    tree = out / "src"
    shutil.copytree(
        source, tree, ignore=shutil.ignore_patterns(".venv", ".airflow", ".git", "*.egg-info", "build", "__pycache__")
    )
    uv = Path(sys.executable).parent / "uv"  # `make install` puts it in the venv; it builds in isolation
    subprocess.run(
        [str(uv), "build", "--wheel", "-q", "-o", str(out), str(tree)],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    (wheel,) = out.glob("airflow_tiktok_display-*.whl")
    return wheel


@pytest.fixture(scope="module")
def wheel_files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    source = Path(os.environ.get("TIKTOK_PACKAGING_SOURCE") or ROOT)
    wheel = build_wheel(source, tmp_path_factory.mktemp("wheel"))
    with zipfile.ZipFile(wheel) as zf:
        return zf.namelist()


def top_level(files: list[str]) -> set[str]:
    return {name.split("/")[0] for name in files if ".dist-info/" not in name}


def test_the_wheel_ships_provider_warehouse_pipeline_and_ops(wheel_files: list[str]) -> None:
    assert top_level(wheel_files) == set(SHIPPED)
    for module in (
        "tiktok_provider/__init__.py",
        "tiktok_provider/get_provider_info.py",
        "tiktok_pipeline/__init__.py",
        "tiktok_ops/bootstrap.py",
        "tiktok_ops/dag_role.py",
        "tiktok_ops/settings.py",
        "tiktok_warehouse/migrations/env.py",
        "tiktok_warehouse/migrations/script.py.mako",
    ):
        assert module in wheel_files, module
    migrations = [f for f in wheel_files if f.startswith("tiktok_warehouse/migrations/versions/") and f.endswith(".py")]
    in_tree = list((ROOT / "include/tiktok_warehouse/migrations/versions").glob("*.py"))
    assert migrations and len(migrations) == len(in_tree), "every migration ships"
    entry_points = next(f for f in wheel_files if f.endswith(".dist-info/entry_points.txt"))
    assert entry_points, "the apache_airflow_provider entry point (the connection form)"


def test_the_wheel_ships_no_tools_no_simulator_no_bench(wheel_files: list[str]) -> None:
    leaked = [f for f in wheel_files if f.split("/")[0] in NOT_SHIPPED]
    assert not leaked, leaked
    for name in ("demo.py", "pgserver.py", "soak.py", "up.py", "bench_loads.py", "baseline_http_operator.py"):
        assert not [f for f in wheel_files if f.endswith("/" + name)], name


def test_what_ships_imports_no_tool_and_no_simulator() -> None:
    """Imports go downward: nothing shipped (nor a DAG) imports tiktok_tools or tiktok_sim."""
    offenders = []
    for folder in ("include", "plugins", "dags"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                offenders += [
                    f"{path.relative_to(ROOT)}:{node.lineno} {name}"
                    for name in names
                    if name.split(".")[0] in ("tiktok_tools", "tiktok_sim", "tiktok_local")
                ]
    assert not offenders, offenders
