"""attack14e: the backfill's runbook (also the "Runbook" of its failure alert) still says the old batch limit."""

from __future__ import annotations

import importlib.util
from pathlib import Path

DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "tiktok_video_backfill.py"


def test_the_backfill_runbook_names_the_batch_timeout_cap() -> None:
    """FINDING: since c7137ae a batch task's execution_timeout is capped at [tiktok] batch_timeout_hours (24),
    but the runbook on-call reads (the task's doc, quoted in every failure alert) still says the batch's own
    limit is the account's limit times its accounts, and that raising execution_timeout is the fix. A batch
    of 50 accounts at 2 h each stops at 24 h, not 100 h; when it keeps timing out as a whole, raising
    execution_timeout changes nothing: the cap (or [tiktok] accounts_per_batch) is what to change.
    """
    spec = importlib.util.spec_from_file_location("attack14e_backfill_dag", DAG_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    doc = module.SYNC_DOC
    assert "batch_timeout_hours" in doc, "the runbook does not say the batch's own limit is capped"
