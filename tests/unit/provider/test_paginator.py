"""The paginator over canned answers: the cursor, repeats across pages, the paging guards, 20 ids a query."""

from __future__ import annotations

import json
from typing import Any

import pytest
from canned_tiktok import OPEN_ID, ok, page

from tiktok_provider import errors


def test_pages_follow_the_cursor_and_drop_repeats_across_the_boundary(make_hook: Any) -> None:
    hook, script, _, _ = make_hook(
        page(["3", "2"], cursor=2000, has_more=True),
        page(["2", "1"], cursor=1000, has_more=False),
    )
    pages = list(hook.iter_video_pages(OPEN_ID, fields=["title"]))
    assert [[v["id"] for v in p.videos] for p in pages] == [["3", "2"], ["1"]]
    assert json.loads(script.requests[1].body) == {"max_count": 20, "cursor": 2000}


def test_a_cursor_that_does_not_move_ends_the_listing_with_a_clear_error(make_hook: Any) -> None:
    hook, _, _, _ = make_hook(
        page(["3"], cursor=2000, has_more=True),
        page(["2"], cursor=2000, has_more=True),
    )
    with pytest.raises(errors.TikTokMalformedResponse, match="cursor did not advance"):
        list(hook.iter_video_pages(OPEN_ID, fields=["title"]))


def test_has_more_over_endless_empty_pages_is_stopped(make_hook: Any) -> None:
    answers = [page([], cursor=10_000 - n, has_more=True) for n in range(5)]
    hook, script, _, _ = make_hook(*answers)
    with pytest.raises(errors.TikTokMalformedResponse, match="empty pages"):
        list(hook.iter_video_pages(OPEN_ID, fields=["title"], max_empty_pages=3))
    assert len(script.requests) == 4


def test_query_sends_at_most_twenty_ids_a_call(make_hook: Any) -> None:
    ids = [str(n) for n in range(1, 46)]
    answers = [ok({"videos": [{"id": i} for i in ids[s : s + 20]]}) for s in range(0, 45, 20)]
    hook, script, _, _ = make_hook(*answers)
    batches = list(hook.query_videos(OPEN_ID, ids, fields=["title"]))
    assert [len(b) for b, _ in batches] == [20, 20, 5]
    assert [len(json.loads(r.body)["filters"]["video_ids"]) for r in script.requests] == [20, 20, 5]
