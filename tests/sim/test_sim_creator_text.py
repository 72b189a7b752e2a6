"""Accounts whose text a test chooses: display name, username, and every video's title and description."""

from __future__ import annotations

import html

import pytest

pytestmark = pytest.mark.integration

TEXT = "{{ 7*7 }} <script>alert(1)</script> \u202e\u0645\u0631\u062d\u0628\u0627"


def test_chosen_text_is_served_verbatim_by_user_info_list_and_query(sim) -> None:
    from tiktok_sim.testing import DEFAULT_SCOPES

    account = sim.admin.create_account(
        videos=3, display_name=TEXT, username=f"u{TEXT}", video_title=f"t{TEXT}", video_description=f"d{TEXT}"
    )
    assert (account["display_name"], account["username"]) == (TEXT, f"u{TEXT}")
    api = sim.display(sim.get_tokens(account["open_id"], DEFAULT_SCOPES))
    user = api.user_info(["display_name", "username"]).json()["data"]["user"]
    assert user == {"display_name": TEXT, "username": f"u{TEXT}"}
    fields = ["id", "title", "video_description", "embed_html"]
    listed = api.video_list(fields).json()["data"]["videos"]
    assert len(listed) == 3
    for video in listed:
        assert (video["title"], video["video_description"]) == (f"t{TEXT}", f"d{TEXT}")
        assert html.escape(f"d{TEXT}") in video["embed_html"], "embed_html escapes the description, as TikTok does"
        assert "<script>alert(1)</script>" not in video["embed_html"].split("<section>")[1]
    queried = api.video_query(["id", "title"], [listed[0]["id"]]).json()["data"]["videos"]
    assert queried == [{"id": listed[0]["id"], "title": f"t{TEXT}"}]


def test_accounts_without_chosen_text_keep_their_generated_text(sim) -> None:
    from tiktok_sim.population import video_traits

    plain = sim.admin.create_account(videos=5)
    assert TEXT not in (plain["display_name"], plain["username"])
    seed = sim.admin.config()["seed"]
    for video in sim.admin.videos(plain["open_id"]):
        traits = video_traits(seed, int(video["id"]))
        assert (video["title"], video["video_description"]) == (traits.title, traits.description)
