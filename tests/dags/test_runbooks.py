"""Every error class a per-account task can raise has an entry in that task's runbook (its doc_md)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from airflow.dag_processing.dagbag import DagBag

from tiktok_pipeline.runbooks import ERRORS, error_runbook
from tiktok_provider import errors
from tiktok_warehouse import tokens

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"
#: The per-account tasks: each calls TikTok through the hook and the warehouse's token store.
PER_ACCOUNT_TASKS = {
    "tiktok_profile_snapshot": "snapshot_profile",
    "tiktok_video_backfill": "sync_videos",
    "tiktok_cover_refresh": "refresh_covers",
}


def _error_classes() -> list[type[BaseException]]:
    """The provider's errors and the warehouse token store's: what a per-account task can raise."""
    found: list[type[BaseException]] = []
    for module in (errors, tokens):
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and issubclass(cls, Exception):
                found.append(cls)
    return found


def test_the_walk_finds_the_error_classes() -> None:
    names = {cls.__name__ for cls in _error_classes()}
    assert {"TikTokAPIError", "TikTokMalformedResponse", "TokenDecryptionError", "AccountNotActive"} <= names
    assert len(names) >= 20


@pytest.fixture(scope="module")
def dagbag() -> DagBag:
    return DagBag(dag_folder=str(DAGS_DIR))


@pytest.mark.parametrize(("dag_id", "task_id"), sorted(PER_ACCOUNT_TASKS.items()))
def test_every_error_class_has_a_runbook_entry_in_every_task_that_can_raise_it(
    dagbag: DagBag, dag_id: str, task_id: str
) -> None:
    doc = dagbag.dags[dag_id].get_task(task_id).doc_md
    missing = [cls.__name__ for cls in _error_classes() if f"- `{cls.__name__}`: " not in doc]
    assert missing == []
    assert "malformed answer" in doc and "error code we do not know" in doc
    if task_id != "snapshot_profile":
        assert "*removals held*" in doc


def test_every_entry_names_a_real_error_class() -> None:
    names = {cls.__name__ for cls in _error_classes()}
    assert set(ERRORS) <= names


def test_a_new_error_class_without_an_entry_is_caught() -> None:
    class TikTokBrandNewError(errors.TikTokError):
        pass

    assert f"- `{TikTokBrandNewError.__name__}`: " not in error_runbook()
