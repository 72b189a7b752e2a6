"""The capacity model's arithmetic: calls per day per endpoint and the most accounts that fit."""

from __future__ import annotations

import pytest

from tiktok_tools.capacity import Capacity, main


def test_calls_per_day_per_endpoint() -> None:
    c = Capacity(accounts=1000, videos=500, cover_hours=6, recent_videos=20)
    calls = c.per_day_calls()
    assert calls["user/info"] == 1000  # one profile snapshot per account
    assert calls["video/list"] == 1000  # one page of recent videos per account
    assert calls["video/query"] == 1000 * 25 * 4  # 500 covers / 20 per call, 4 lifetimes a day
    assert c.per_day == 864_000
    assert c.fits() == {"user/info": True, "video/list": True, "video/query": True}


def test_partial_pages_round_up_and_a_sync_always_lists_one_page() -> None:
    c = Capacity(accounts=3, videos=21, cover_hours=6, recent_videos=0)
    assert c.per_account() == {"user/info": 1.0, "video/list": 1.0, "video/query": 2 * 4}
    assert Capacity(3, 21, 6, 41).per_account()["video/list"] == 3
    assert c.backfill_calls() == 3 * 2


def test_max_accounts_is_set_by_the_endpoint_that_runs_out_first() -> None:
    most, binding = Capacity(accounts=1, videos=1000, cover_hours=6, recent_videos=20).max_accounts()
    assert binding == "video/query"
    assert most == 864_000 // (50 * 4) == 4320
    assert Capacity(most, 1000, 6, 20).fits()["video/query"]
    assert not Capacity(most + 1, 1000, 6, 20).fits()["video/query"]
    # accounts without videos: the daily calls bind
    assert Capacity(1, 0, 6, 20).max_accounts() == (864_000, "user/info")


def test_longer_cover_lives_and_lower_limits() -> None:
    assert Capacity(10, 20, 12, 20).per_account()["video/query"] == 2
    assert Capacity(10, 20, 6, 20, limit_per_minute=540).per_day == 540 * 1440


def test_backfill_days_at_the_bulk_share() -> None:
    c = Capacity(accounts=100, videos=100_000, cover_hours=6, recent_videos=20)
    assert c.backfill_calls() == 500_000
    assert c.backfill_days() == pytest.approx(500_000 / (864_000 * 0.8))


def test_the_command_prints_and_exits_1_when_it_does_not_fit(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--accounts", "4320", "--videos", "1000"]) == 0
    out = capsys.readouterr().out
    assert "max accounts with 1,000 videos each: 4,320 (bound by video/query)" in out
    assert main(["--accounts", "4321", "--videos", "1000"]) == 1
    assert "NO" in capsys.readouterr().out
