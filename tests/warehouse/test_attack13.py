"""attack13: hostile values through the COPY paths of the bulk upsert (direct first load and merge)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tiktok_warehouse.loads import Warehouse

T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


def titles(engine: Engine, open_id: str) -> dict[str, Any]:
    with engine.connect() as conn:
        return dict(conn.execute(text("SELECT id, title FROM tiktok.videos WHERE open_id = :o"), {"o": open_id}).all())


@pytest.mark.parametrize("stored_first", [False, True], ids=["direct", "merge"])
def test_a_non_text_title_loads_as_the_page_path_stores_it(
    stored_first: bool, warehouse: Warehouse, wh_engine: Engine, account: str, make_video: Any
) -> None:
    # The page (JSON) path stores str(value) for a text field that came as a number or a boolean;
    # the bulk (COPY) path must not fail the whole batch on it.
    if stored_first:
        warehouse.upsert_videos(account, [make_video(1)], captured_at=T0)
    batch = [
        make_video(1, title="plain"),
        make_video(2, title=12345),
        make_video(3, title=True),
        make_video(4, title=1.5),
    ]
    warehouse.upsert_videos(account, batch, captured_at=T0)
    stored = titles(wh_engine, account)
    assert [stored[v["id"]] for v in batch] == ["plain", "12345", "True", "1.5"]
