"""Importing our packages changes no logging: a level set on import would be global and invisible."""

from __future__ import annotations

import subprocess
import sys

MODULES = (
    "tiktok_provider.hooks.tiktok",
    "tiktok_provider.auth",
    "tiktok_provider.client",
    "tiktok_provider.paginator",
    "tiktok_warehouse.loads",
    "tiktok_warehouse.tokens",
    "tiktok_pipeline.operators",
    "tiktok_pipeline.common",
)

#: Airflow configures logging when it is first imported: that happens before the measure.
PROBE = """
import logging, sys
import airflow.sdk, sqlalchemy, requests  # noqa: F401 - their own logging setup is not ours
before = {name: logging.getLogger(name).level for name in ("", "urllib3", "requests", "sqlalchemy")}
for module in sys.argv[1:]:
    __import__(module)
after = {name: logging.getLogger(name).level for name in before}
changed = {name: (before[name], after[name]) for name in before if before[name] != after[name]}
print(changed)
sys.exit(1 if changed else 0)
"""


def test_importing_our_modules_sets_no_logger_level() -> None:
    probe = subprocess.run([sys.executable, "-c", PROBE, *MODULES], capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stdout + probe.stderr[-2000:]


def test_the_pipeline_quiets_urllib3_where_a_task_builds_its_hook(monkeypatch) -> None:
    import logging

    from tiktok_pipeline import hooks

    monkeypatch.setattr(logging.getLogger("urllib3"), "level", logging.NOTSET)
    hooks.display_hook("tiktok_default")  # builds nothing that needs the connection yet
    assert logging.getLogger("urllib3").level == logging.WARNING
