"""Reading what a dag.test() run left behind: task states, tries, XComs (tiktok_tools.dagrun), and rows."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from tiktok_tools.dagrun import states, tries, xcom

__all__ = ["rows", "states", "tries", "xcom"]


def rows(engine: Any, query: str, **params: Any) -> list[tuple]:
    """Return the rows of a SQL query as tuples."""
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(query), params)]
