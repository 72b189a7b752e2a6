"""Staging without a database: cleaning, cover expiry parsing and COPY rendering."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tiktok_warehouse.loads import (
    clean_text,
    copy_data,
    cover_expires_at,
    cover_expires_unix,
    prepare_videos,
)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://cdn/a.jpeg?x-expires=1772447400&x-signature=abc", 1772447400),
        ("https://cdn/a.jpeg?x-signature=abc&x-expires=1772447400", 1772447400),
        ("https://cdn/a.jpeg?X-EXPIRES=1772447400", 1772447400),
        ("https://cdn/a.jpeg?x-expires=1772447400#frag", 1772447400),
        ("https://cdn/a.jpeg?x-expires=1772447400123", 1772447400),  # milliseconds
        ("https://cdn/a.jpeg?my-x-expires=1772447400", None),
        ("https://cdn/a.jpeg?x-expires=17724474OO", None),
        ("https://cdn/a.jpeg?x-expires=-1772447400", None),
        ("https://cdn/a.jpeg?x-expires=0", None),
        ("https://cdn/x-expires=1772447400/a.jpeg", None),
        (None, None),
        ("", None),
    ],
)
def test_cover_expires(url: str | None, expected: int | None) -> None:
    assert cover_expires_unix(url) == expected
    assert cover_expires_at(url) == (datetime.fromtimestamp(expected, UTC) if expected else None)


def test_clean_text() -> None:
    assert clean_text("a\x00b\x00") == "ab"
    assert clean_text("🎉\ud83d") == "🎉\ufffd"
    assert clean_text("\ud83d\ude00") == "😀"  # a pair that arrived as two halves is rejoined
    assert clean_text(123) == "123"
    assert clean_text(None) is None


def test_prepare_dedupes_sorts_and_groups_by_fields_carried() -> None:
    groups = prepare_videos(
        [
            {"id": "3", "title": "c", "like_count": 1},
            {"id": "1", "title": "a"},
            {"id": "2", "title": "b", "like_count": 2},
            {"id": "1", "title": "a2", "like_count": 9, "unrelated": True},
        ]
    )
    assert [(g.fields, g.columns["id"]) for g in groups] == [(("title", "like_count"), ["1", "2", "3"])]
    assert groups[0].columns["title"] == ["a2", "b", "c"]
    mixed = prepare_videos([{"id": "b", "title": "x"}, {"id": "a", "view_count": 1}])
    assert sorted((g.fields, tuple(g.columns["id"])) for g in mixed) == [
        (("title",), ("b",)),
        (("view_count",), ("a",)),
    ]
    with pytest.raises(ValueError, match="no id"):
        prepare_videos([{"title": "orphan"}])


def parse_copy_text(data: bytes) -> list[list[str | None]]:
    """The inverse of COPY's text format, as Postgres reads it."""
    escapes = {"t": "\t", "n": "\n", "r": "\r", "\\": "\\"}
    rows = []
    for line in data.decode().split("\n")[:-1]:
        values: list[str | None] = []
        for field in line.split("\t"):
            if field == "\\N":
                values.append(None)
                continue
            out, i = [], 0
            while i < len(field):
                if field[i] == "\\":
                    out.append(escapes[field[i + 1]])
                    i += 2
                else:
                    out.append(field[i])
                    i += 1
            values.append("".join(out))
        rows.append(values)
    return rows


@given(st.lists(st.tuples(st.one_of(st.none(), st.text()), st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)))))
def test_copy_data_round_trips(rows: list[tuple[str | None, int | None]]) -> None:
    texts = [r[0] for r in rows]
    ints = [r[1] for r in rows]
    data = copy_data([texts, ints])
    assert b"\x00" not in data
    expected = [[clean_text(t), None if i is None else str(i)] for t, i in rows]
    assert parse_copy_text(data) == expected
