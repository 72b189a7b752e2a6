"""What the person connecting an account hears when its first profile fetch is refused (connect.profile_refusal)."""

from __future__ import annotations

import pytest

from tiktok_pipeline.connect import profile_refusal
from tiktok_provider import errors

ACCOUNT = "'Ada' (open_id acct-1)"
SCOPES = frozenset({"user.info.basic", "video.list"})


def refusal(exc: BaseException) -> object:
    return profile_refusal(exc, account=ACCOUNT, scopes=SCOPES)


def error(cls: type[errors.TikTokError], status: int, code: str) -> errors.TikTokError:
    return cls("refused", endpoint="/v2/user/info/", open_id="acct-1", http_status=status, code=code, log_id="L1D")


@pytest.mark.parametrize(
    ("exc", "status", "usable", "says"),
    [
        (
            error(errors.TikTokAccessTokenInvalid, 401, "access_token_invalid"),
            "refused",
            False,
            "refused the access token it had just issued, also after one refresh",
        ),
        (
            error(errors.TikTokScopeError, 401, "scope_not_authorized"),
            "refused",
            False,
            "lack of a scope (scope_not_authorized (HTTP 401): refused [log_id=L1D]), although the grant lists "
            "user.info.basic, video.list",
        ),
        (
            error(errors.TikTokAPIError, 403, "account_suspended"),
            "refused",
            False,
            "may be suspended, restricted or private at TikTok",
        ),
        (
            error(errors.TikTokReauthRequired, 200, "invalid_grant"),
            "refused",
            False,
            "now marked reauth_required and cannot sync",
        ),
        (
            error(errors.TikTokMalformedResponse, 200, "ok"),
            "refused",
            True,
            "Report it to TikTok support with the log_id. The next tiktok_profile_snapshot run tries again.",
        ),
        (
            error(errors.TikTokServerError, 500, "internal_error"),
            "not_fetched",
            True,
            "TikTok kept failing (internal_error (HTTP 500): refused [log_id=L1D]), retried",
        ),
    ],
)
def test_each_refusal_says_what_tiktok_answered_what_it_means_and_what_to_do(
    exc: errors.TikTokError, status: str, usable: bool, says: str
) -> None:
    fetch = refusal(exc)
    assert (fetch.status, fetch.usable) == (status, usable)
    assert fetch.problem.startswith(f"Account {ACCOUNT} is connected (its tokens are stored), but"), fetch.problem
    assert says in fetch.problem, fetch.problem
    assert "[log_id=L1D]" in fetch.problem
    if not usable:
        assert "Reconnect" in fetch.problem or "Check the account on TikTok" in fetch.problem


def test_a_warehouse_failure_after_the_fetch_is_not_called_a_refusal() -> None:
    fetch = refusal(RuntimeError("connection reset"))
    assert (fetch.status, fetch.usable) == ("not_fetched", True)
    assert "could not be fetched or stored (RuntimeError: connection reset)" in fetch.problem
