"""TikTokDisplayHook against the simulator over real HTTP and the token store in the real Postgres."""

from __future__ import annotations

import logging
import math
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from tiktok_pipeline.hooks import display_hook
from tiktok_provider import errors
from tiktok_provider.paginator import VIDEO_LIST, VIDEO_QUERY

pytestmark = pytest.mark.integration


def endpoint_requests(sim, endpoint: str) -> int:
    return sim.admin.stats()["endpoints"].get(endpoint, {}).get("requests", 0)


def token_calls(sim, grant_type: str = "refresh_token") -> dict[str, int]:
    return sim.admin.stats()["oauth"]["token"].get(grant_type, {})


def test_test_connection_checks_the_client_credentials(hook, sim, tiktok_connections) -> None:
    ok, message = hook.test_connection()
    assert ok, message
    bad = display_hook()
    bad.config  # noqa: B018 - load, then swap the secret
    object.__setattr__(bad.config, "client_secret", "wrong-secret")
    ok, message = bad.test_connection()
    assert not ok
    assert "invalid_client" in message


@pytest.mark.parametrize("videos", [1, 20, 95, 200])
def test_listing_costs_ceil_v_over_20_calls(hook, sim, connect_account, videos: int) -> None:
    open_id = connect_account(videos=videos)
    sim.admin.reset_stats()
    ids = [v["id"] for page in hook.iter_video_pages(open_id) for v in page.videos]
    assert len(ids) == len(set(ids)) == videos
    assert set(ids) == set(sim.admin.video_ids(open_id))
    assert endpoint_requests(sim, "video_list") == math.ceil(videos / 20)


@pytest.mark.parametrize("count", [1, 20, 21, 57])
def test_query_costs_ceil_s_over_20_calls(hook, sim, connect_account, count: int) -> None:
    open_id = connect_account(videos=60)
    wanted = sim.admin.video_ids(open_id)[:count]
    sim.admin.reset_stats()
    batches = list(hook.query_videos(open_id, wanted))
    assert all(len(batch) <= 20 for batch, _ in batches)
    assert {v["id"] for _, videos in batches for v in videos} == set(wanted)
    assert endpoint_requests(sim, "video_query") == math.ceil(count / 20)


def test_query_omits_deleted_and_foreign_ids(hook, sim, connect_account) -> None:
    mine = connect_account(videos=5)
    other = connect_account(videos=2)
    ids = sim.admin.video_ids(mine)
    sim.admin.delete_video(ids[0])
    [(batch, videos)] = hook.query_videos(mine, [*ids, *sim.admin.video_ids(other)])
    assert {v["id"] for v in videos} == set(ids[1:])
    assert len(batch) == 7


def test_pagination_survives_short_empty_pages_and_boundary_duplicates(hook, sim, connect_account) -> None:
    open_id = connect_account(videos=150)
    sim.admin.set_config(page_short_prob=0.3, page_empty_prob=0.2, page_duplicate_prob=0.5)
    try:
        ids = [v["id"] for page in hook.iter_video_pages(open_id) for v in page.videos]
    finally:
        sim.admin.set_config(page_short_prob=0.0, page_empty_prob=0.0, page_duplicate_prob=0.0)
    assert len(ids) == len(set(ids)) == 150
    assert set(ids) == set(sim.admin.video_ids(open_id))


def test_faulty_api_still_yields_the_exact_video_set(hook, sim, connect_account) -> None:
    open_id = connect_account(videos=300)
    sim.admin.set_faults(
        "video_list",
        probabilities={"rate_limit": 0.20, "internal_error": 0.10, "slow": 0.05},
        slow_seconds=0.2,
    )
    hook.config  # noqa: B018
    object.__setattr__(hook.config, "max_attempts", 12)
    ids = [v["id"] for page in hook.iter_video_pages(open_id) for v in page.videos]
    faults = sim.admin.stats()["endpoints"]["video_list"]["faults"]
    assert sum(faults.values()) > 0, "no fault was injected"
    assert len(ids) == len(set(ids)) == 300
    assert set(ids) == set(sim.admin.video_ids(open_id))
    assert hook.retries[VIDEO_LIST] >= faults.get("rate_limit", 0) + faults.get("internal_error", 0)
    assert all(0 <= s <= hook.config.max_backoff_seconds for s in hook.sleeps)


@pytest.mark.parametrize("kind", ["truncated", "html_503", "internal_error", "rate_limit"])
def test_transient_faults_are_retried(hook, sim, connect_account, kind: str) -> None:
    open_id = connect_account(videos=3)
    sim.admin.fail_next("user_info", kind, count=2)
    user = hook.get_user_info(open_id, ["open_id", "display_name"])
    assert user["open_id"] == open_id
    assert len(hook.sleeps) == 2


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("missing_data", errors.TikTokMalformedResponse),
        ("unknown_error_code", errors.TikTokAPIError),
    ],
)
def test_contract_breaks_are_not_retried(hook, sim, connect_account, kind, error) -> None:
    open_id = connect_account(videos=3)
    sim.admin.fail_next("user_info", kind)
    sim.admin.reset_stats()
    with pytest.raises(error) as excinfo:
        hook.get_user_info(open_id, ["open_id"])
    assert not excinfo.value.retryable
    assert endpoint_requests(sim, "user_info") == 1
    assert hook.sleeps == []


def test_retry_gives_up_after_max_attempts(hook, sim, connect_account) -> None:
    open_id = connect_account(videos=3)
    sim.admin.fail_next("user_info", "internal_error", count=50)
    sim.admin.reset_stats()
    with pytest.raises(errors.TikTokServerError) as excinfo:
        hook.get_user_info(open_id, ["open_id"])
    assert endpoint_requests(sim, "user_info") == hook.config.max_attempts
    assert excinfo.value.log_id
    # exponential backoff with full jitter: every wait within [0, cap]
    assert len(hook.sleeps) == hook.config.max_attempts - 1


def test_retry_after_header_is_honoured(hook, sim, connect_account) -> None:
    open_id = connect_account(videos=3)
    object.__setattr__(hook.config, "max_backoff_seconds", 600)
    sim.admin.set_config(rate_retry_after=True)
    try:
        sim.admin.fail_next("user_info", "rate_limit")
        hook.get_user_info(open_id, ["open_id"])
    finally:
        sim.admin.set_config(rate_retry_after=False)
    assert hook.sleeps == [60.0], "the wait is the server's Retry-After (the window), not our jitter"


def test_eight_workers_on_an_expired_token_refresh_once(hook, sim, connect_account, tiktok_connections) -> None:
    open_id = connect_account(videos=3)
    sim.admin.expire_access_tokens(open_id)
    sim.admin.reset_stats()
    results: list[object] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        own = display_hook()
        own._tokens[open_id] = hook.token_store.get(open_id)  # every worker holds the dead token
        barrier.wait()
        try:
            results.append(own.get_user_info(open_id, ["open_id"])["open_id"])
        except Exception as exc:  # pragma: no cover - reported by the assertion
            results.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [open_id] * 8
    assert token_calls(sim) == {"ok": 1}


def test_proactive_refresh_before_expiry_persists_the_rotated_token(hook, sim, connect_account, clean_warehouse):
    open_id = connect_account(videos=3)
    before = hook.token_store.get(open_id)
    with clean_warehouse.begin() as conn:
        conn.execute(
            text("UPDATE tiktok.accounts SET access_expires_at = now() + interval '1 minute' WHERE open_id = :o"),
            {"o": open_id},
        )
    hook._tokens.clear()
    sim.admin.reset_stats()
    hook.get_user_info(open_id, ["open_id"])
    after = hook.token_store.get(open_id)
    assert token_calls(sim) == {"ok": 1}
    assert after.refresh_token != before.refresh_token
    assert after.access_expires_at > datetime.now(UTC) + timedelta(hours=1)
    # the old refresh token is dead; the stored one works
    with pytest.raises(errors.TikTokReauthRequired):
        hook.refresh_grant(before.refresh_token)
    assert hook.refresh_grant(after.refresh_token).open_id == open_id


def test_rejected_refresh_marks_the_account_reauth_required(hook, sim, connect_account) -> None:
    open_id = connect_account(videos=3)
    sim.admin.revoke(open_id)
    with pytest.raises(errors.TikTokReauthRequired) as excinfo:
        hook.get_user_info(open_id, ["open_id"])
    message = str(excinfo.value)
    assert "tiktok_connect_account" in message
    assert open_id in message
    assert excinfo.value.log_id
    [account] = hook.token_store.list_accounts(statuses=("reauth_required",), open_ids=[open_id])
    assert account.status == "reauth_required"
    # later calls fail at once, without hammering the token endpoint
    sim.admin.reset_stats()
    with pytest.raises(errors.TikTokReauthRequired):
        display_hook().get_user_info(open_id, ["open_id"])
    assert sim.admin.stats()["total"] == 0


def test_default_user_fields_follow_the_granted_scopes(hook, sim, connect_account) -> None:
    open_id = connect_account(videos=1, scopes=["user.info.basic"])
    user = hook.get_user_info(open_id)
    assert set(user) == {"open_id", "union_id", "avatar_url", "avatar_url_100", "avatar_large_url", "display_name"}
    sim.admin.reset_stats()
    with pytest.raises(errors.TikTokScopeError) as excinfo:
        hook.get_user_info(open_id, ["follower_count"])
    assert "user.info.stats" in str(excinfo.value)
    assert sim.admin.stats()["total"] == 0, "a field outside the scopes must be refused before sending"


def test_unknown_fields_are_refused_before_sending(hook, connect_account) -> None:
    open_id = connect_account(videos=1)
    with pytest.raises(errors.TikTokInvalidParams):
        hook.get_user_info(open_id, ["open_id", "password"])


def test_bearer_token_never_goes_over_plain_http_to_a_remote_host(hook, connect_account) -> None:
    open_id = connect_account(videos=1)
    hook.config  # noqa: B018
    object.__setattr__(hook.config, "base_url", "http://api.example.com")
    before = dict(hook.calls)
    with pytest.raises(errors.TikTokConfigError) as excinfo:
        hook.get_user_info(open_id, ["open_id"])
    assert "https" in str(excinfo.value)
    with pytest.raises(errors.TikTokConfigError):
        hook.refresh_grant("rft.x")  # the client secret is a secret too
    assert dict(hook.calls) == before, "nothing may be sent"


def test_insecure_http_hosts_opt_in_only_names_hosts(hook, connect_account, sim) -> None:
    from tiktok_provider.connection import TikTokConnectionConfig

    class Conn:
        host = "http://tiktok-sim:8765"
        port = login = password = None
        extra_dejson = {"insecure_http_hosts": "tiktok-sim, other"}

    config = TikTokConnectionConfig.from_connection(Conn())
    assert config.insecure_http_hosts == {"tiktok-sim", "other"}
    open_id = connect_account(videos=1)
    object.__setattr__(hook.config, "base_url", "http://api.example.com")
    object.__setattr__(hook.config, "insecure_http_hosts", frozenset({"tiktok-sim"}))
    with pytest.raises(errors.TikTokConfigError):
        hook.get_user_info(open_id, ["open_id"])
    object.__setattr__(hook.config, "insecure_http_hosts", frozenset({"api.example.com"}))
    with pytest.raises(errors.TikTokNetworkError):  # allowed now: it tries (and the name does not resolve)
        object.__setattr__(hook.config, "max_attempts", 1)
        hook.get_user_info(open_id, ["open_id"])


def test_stuck_cursor_ends_with_a_clear_error(hook, sim, connect_account) -> None:
    open_id = connect_account(videos=100)
    pages = hook.iter_video_pages(open_id)
    first = next(pages)
    sim.admin.fail_next("video_list", "stuck_cursor", count=5)
    sim.admin.reset_stats()
    with pytest.raises(errors.TikTokMalformedResponse) as excinfo:
        next(pages)
    assert "did not advance" in str(excinfo.value)
    assert str(first.cursor) in str(excinfo.value)
    assert endpoint_requests(sim, "video_list") == 1, "a contract break is not retried"


def test_has_more_forever_ends_with_a_clear_error(hook, sim, connect_account) -> None:
    open_id = connect_account(videos=10)
    sim.admin.set_faults("video_list", probabilities={"endless_has_more": 1.0})
    with pytest.raises(errors.TikTokMalformedResponse) as excinfo:
        for _ in hook.iter_video_pages(open_id, max_empty_pages=5):
            pass
    assert "empty pages" in str(excinfo.value)
    assert hook.calls[VIDEO_LIST] <= 7


@pytest.mark.parametrize("kind", ["nul_bytes", "wrong_types", "int64_overflow", "non_numeric_id", "long_strings"])
def test_bad_values_are_sanitised_not_loaded(hook, sim, connect_account, kind: str) -> None:
    open_id = connect_account(videos=20)
    sim.admin.fail_next("video_list", kind)
    [page] = list(hook.iter_video_pages(open_id))
    for video in page.videos:
        assert video["id"].isdigit()
        for key, value in video.items():
            if isinstance(value, str):
                assert "\x00" not in value
            if key.endswith("_count") or key in {"duration", "height", "width", "create_time"}:
                assert isinstance(value, int) and 0 <= value < 2**63
    if kind == "long_strings":
        assert any(len(v.get("title", "")) == 10_000 for v in page.videos)
    else:
        assert len(hook.issues) > 0


@pytest.mark.parametrize(
    ("kind", "error", "endpoint"),
    [
        ("internal_error", errors.TikTokServerError, "/v2/user/info/"),
        ("rate_limit", errors.TikTokRateLimited, "/v2/user/info/"),
        ("missing_data", errors.TikTokMalformedResponse, "/v2/user/info/"),
        ("unknown_error_code", errors.TikTokAPIError, "/v2/user/info/"),
    ],
)
def test_error_messages_name_account_endpoint_and_log_id(hook, sim, connect_account, kind, error, endpoint) -> None:
    open_id = connect_account(videos=1)
    object.__setattr__(hook.config, "max_attempts", 1)
    sim.admin.fail_next("user_info", kind)
    with pytest.raises(error) as excinfo:
        hook.get_user_info(open_id, ["open_id"])
    exc = excinfo.value
    assert exc.log_id and len(exc.log_id) == 34
    for part in (open_id, endpoint, exc.log_id):
        assert part in str(exc)


def test_scope_error_from_the_api_names_account_endpoint_and_log_id(hook, sim, connect_account, clean_warehouse):
    open_id = connect_account(videos=1, scopes=["user.info.basic"])
    # pretend the store believes in a scope TikTok did not grant, so the request goes out
    with clean_warehouse.begin() as conn:
        conn.execute(
            text("UPDATE tiktok.accounts SET scopes = scopes || '{user.info.stats}' WHERE open_id = :o"),
            {"o": open_id},
        )
    hook._tokens.clear()
    with pytest.raises(errors.TikTokScopeError) as excinfo:
        hook.get_user_info(open_id, ["follower_count"])
    exc = excinfo.value
    assert exc.code == "scope_not_authorized"
    assert exc.http_status == 401
    for part in (open_id, "/v2/user/info/", exc.log_id):
        assert part in str(exc)


def test_invalid_params_and_network_errors_name_the_account(hook, sim, connect_account) -> None:
    open_id = connect_account(videos=1)
    with pytest.raises(errors.TikTokInvalidParams) as excinfo:
        list(hook.iter_video_pages(open_id, max_count=21))
    assert open_id in str(excinfo.value) and VIDEO_LIST in str(excinfo.value)
    object.__setattr__(hook.config, "base_url", "http://127.0.0.1:9")  # nothing listens on the discard port
    object.__setattr__(hook.config, "max_attempts", 2)
    with pytest.raises(errors.TikTokNetworkError) as excinfo:
        list(hook.query_videos(open_id, ["1"]))
    assert open_id in str(excinfo.value) and VIDEO_QUERY in str(excinfo.value)
    assert excinfo.value.retryable


def test_no_secret_reaches_the_logs(hook, sim, connect_account, caplog, capfd, encryption_key) -> None:
    caplog.set_level(logging.DEBUG)
    open_id = connect_account(videos=25)
    sim.admin.expire_access_tokens(open_id)
    hook.get_user_info(open_id)
    list(hook.iter_video_pages(open_id))
    sim.admin.fail_next("video_query", "internal_error")
    list(hook.query_videos(open_id, sim.admin.video_ids(open_id)))
    tokens = hook.token_store.get(open_id)
    secrets = [sim.client_secret, encryption_key, tokens.access_token, tokens.refresh_token]
    out, err = capfd.readouterr()
    captured = caplog.text + out + err + repr(hook.config) + repr(tokens)
    assert "Refreshing" in captured, "the logs under test must include the refresh"
    for secret in secrets:
        assert secret not in captured


def kill_sessions_while_the_token_call_is_in_flight(sim, application_name: str) -> tuple[threading.Thread, list[int]]:
    """Start a thread that, once the simulator holds a (slow) token request, terminates every warehouse
    session of ``application_name``: what a failover or an idle-in-transaction timeout does."""
    import psycopg2

    from tiktok_ops.settings import Settings

    settings = Settings.from_env()
    killed: list[int] = []

    def kill() -> None:
        deadline = time.monotonic() + 30
        while sim.admin.faults()["oauth_token"]["next"] and time.monotonic() < deadline:
            time.sleep(0.01)
        conn = psycopg2.connect(f"{settings.pg_server}/{settings.warehouse_db}")
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                    (application_name,),
                )
                killed.append(len(cur.fetchall()))
        finally:
            conn.close()

    thread = threading.Thread(target=kill)
    thread.start()
    return thread, killed


def test_the_rotated_token_survives_the_warehouse_session_dying_during_the_refresh(
    hook, sim, connect_account, clean_warehouse
) -> None:
    open_id = connect_account(videos=3)
    before = hook.token_store.get(open_id)
    sim.admin.expire_access_tokens(open_id)
    with clean_warehouse.begin() as conn:
        conn.execute(text("UPDATE tiktok.accounts SET access_expires_at = now() WHERE open_id = :o"), {"o": open_id})
    hook._tokens.clear()
    hook.token_store.get(open_id)  # the pool now holds a warehouse session, as in a running task
    sim.admin.set_faults("oauth_token", queue=[("slow", 1)], slow_seconds=1.0)
    sim.admin.reset_stats()
    killer, killed = kill_sessions_while_the_token_call_is_in_flight(sim, "tiktok_warehouse")
    try:
        user = hook.get_user_info(open_id, ["open_id"])
    finally:
        killer.join(30)
    assert killed and killed[0] >= 1, "the test killed the hook's warehouse session(s)"
    assert user["open_id"] == open_id
    assert token_calls(sim) == {"ok": 1}
    stored = hook.token_store.get(open_id)
    assert stored.refresh_token != before.refresh_token, "the rotated refresh token was stored"
    assert hook.refresh_grant(stored.refresh_token).open_id == open_id, "and it works"


def test_an_estimated_refresh_expiry_that_passed_is_tried_not_condemned(
    hook, sim, connect_account, clean_warehouse, caplog
) -> None:
    """TikTok never stated the lifetime: the daily check leaves the account, the next refresh asks TikTok."""
    from tiktok_warehouse.accounts_admin import daily_account_check

    kept, revoked = connect_account(videos=1), connect_account(videos=1)
    with clean_warehouse.begin() as conn:
        conn.execute(
            text(
                "UPDATE tiktok.accounts SET refresh_expiry_estimated = true, refresh_expires_at = now() - interval "
                "'1 day', access_expires_at = now() - interval '1 minute' WHERE open_id IN (:a, :b)"
            ),
            {"a": kept, "b": revoked},
        )
    with caplog.at_level(logging.INFO, logger="tiktok_warehouse.accounts_admin"):
        summary = daily_account_check(clean_warehouse, now=datetime.now(UTC))
    assert summary["expired"] == []
    assert {a.open_id for a in hook.token_store.list_accounts(statuses=("active",))} >= {kept, revoked}
    assert any("estimated expiry" in r.getMessage() and kept in r.getMessage() for r in caplog.records)

    hook._tokens.clear()
    assert hook.get_user_info(kept, ["open_id"])["open_id"] == kept
    after = hook.token_store.get(kept)
    assert after.status == "active" and not after.refresh_expiry_estimated  # TikTok stated it this time
    assert after.refresh_expires_at > datetime.now(UTC) + timedelta(days=30)

    sim.admin.revoke(revoked)  # now TikTok refuses the token: that, not our estimate, condemns it
    with pytest.raises(errors.TikTokReauthRequired):
        hook.get_user_info(revoked, ["open_id"])
    assert hook.token_store.list_accounts(statuses=("reauth_required",), open_ids=[revoked])
