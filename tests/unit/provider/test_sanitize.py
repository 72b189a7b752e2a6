"""The one sanitiser: the same text cleaning and integer bounds for the provider's parsing and the warehouse."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tiktok_provider import sanitize
from tiktok_provider.fields import INT_BOUNDS
from tiktok_provider.responses import Issues, clean_record
from tiktok_warehouse.loads import prepare_videos


@given(st.text())
def test_clean_text_leaves_text_postgres_and_utf8_accept(text: str) -> None:
    clean = sanitize.clean_text(text)
    assert clean is not None
    assert "\x00" not in clean
    clean.encode("utf-8")  # no unpaired surrogate left
    if "\x00" not in text and not sanitize.has_unpaired_surrogates(text):
        assert clean == text


def test_a_split_surrogate_pair_is_rejoined_and_a_lone_one_replaced() -> None:
    assert sanitize.clean_text("a\ud83d\ude00b") == "a\U0001f600b"
    assert sanitize.clean_text("a\ud83db") == "a\ufffdb"
    assert sanitize.clean_text("n\x00ul") == "nul"


@pytest.mark.parametrize("field", sorted(INT_BOUNDS))
def test_the_provider_and_the_warehouse_share_the_bounds(field: str) -> None:
    low, high = sanitize.int_bounds(field)
    assert low == 0
    for value, ok in ((low, True), (high, True), (low - 1, False), (high + 1, False)):
        issues = Issues()
        kept = clean_record({field: value}, [field], issues=issues, what="x")
        assert (field in kept) is ok, (field, value)
        if ok:
            assert sanitize.clean_int(value, field, "Video 1") == value
        else:
            with pytest.raises(ValueError, match="out of range"):
                sanitize.clean_int(value, field, "Video 1")


@pytest.mark.parametrize(("field", "value"), [("like_count", -1), ("duration", -5), ("view_count", -(2**63))])
def test_the_warehouse_refuses_a_negative_count_as_the_provider_drops_it(field: str, value: Any) -> None:
    """Before one sanitiser the warehouse took counts down to -2**63 while the provider dropped any below 0."""
    with pytest.raises(ValueError, match=f"Video 7: {field} {value} is out of range"):
        prepare_videos([{"id": "7", "create_time": 1_700_000_000, field: value}])
    assert field not in (clean_record({field: value}, [field], issues=Issues(), what="video 7") or {})


def test_whole_numbers_written_as_text_or_float_are_read_others_refused() -> None:
    assert sanitize.clean_int("42", "like_count", "Video 1") == 42
    assert sanitize.clean_int(42.0, "like_count", "Video 1") == 42
    assert sanitize.clean_int(None, "like_count", "Video 1") is None
    for bad in ("lots", 4.5, [1]):
        with pytest.raises(ValueError, match="not an integer"):
            sanitize.clean_int(bad, "like_count", "Video 1")
    assert not sanitize.is_int_in_bounds("like_count", True)
