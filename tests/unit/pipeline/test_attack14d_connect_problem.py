"""The connect result's ``problem`` (XCom, and a log line) is one printable line, bounded, with no token in it.

What TikTok answers (its error ``message``, ``code``, ``log_id``: whatever the API, or a proxy in
front of it, sends) and the text of any other exception go into ``problem``; the same text is logged
as one WARNING/ERROR line. A line break there forges log lines for the person reading the connect
run, and an exception that quotes a token (a driver error quoting its parameters, a proxy echoing a
form) would put it in the run's XCom, which the secrets masker does not touch.
"""

from __future__ import annotations

import pytest

from tiktok_pipeline.connect import profile_refusal
from tiktok_provider import errors

HOSTILE = "refused\n2026-12-06T08:00:00Z [info] Connected account 'Ada' \x1b[2Jwith scopes all\u202e"
TOKEN = "act.Zx9fLmK2pQ7rT4vW8yB1nC5dE3gH6jJ0"


def problem(exc: BaseException) -> str:
    fetch = profile_refusal(exc, account="'Ada' (open_id acct-1)", scopes=frozenset({"user.info.basic"}))
    assert fetch.problem is not None
    return fetch.problem


@pytest.mark.parametrize(
    "exc",
    [
        errors.TikTokAPIError(HOSTILE, endpoint="/v2/user/info/", open_id="acct-1", http_status=403, code="x\ny"),
        errors.TikTokServerError(HOSTILE, endpoint="/v2/user/info/", open_id="acct-1", http_status=500, code="e"),
        errors.TikTokAPIError("refused", http_status=400, code="invalid_params", log_id="L1\nforged line"),
        RuntimeError(HOSTILE),
    ],
    ids=["refused", "retryable", "log_id", "other"],
)
def test_the_problem_is_one_printable_line(exc: BaseException) -> None:
    text = problem(exc)
    assert text.isprintable(), repr(text)


@pytest.mark.parametrize(
    "exc",
    [
        errors.TikTokAPIError(f"bad token {TOKEN}", endpoint="/v2/user/info/", http_status=400, code="invalid_params"),
        RuntimeError(f"(psycopg.DataError) ... [parameters: {{'access_token': '{TOKEN}'}}]"),
    ],
    ids=["tiktok", "other"],
)
def test_the_problem_never_carries_a_token(exc: BaseException) -> None:
    assert "act.Zx9f" not in problem(exc)


def test_the_problem_is_bounded() -> None:
    text = problem(RuntimeError("x" * 100_000))
    assert len(text) < 2_000, len(text)
