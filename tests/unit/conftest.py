"""The unit tier: no Postgres, no server. ``canned_tiktok`` (beside this file) plays TikTok."""

from __future__ import annotations

import os
import sys
from typing import Any

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from canned_tiktok import hook_factory


@pytest.fixture
def make_hook(monkeypatch: pytest.MonkeyPatch) -> Any:
    return hook_factory(monkeypatch)
