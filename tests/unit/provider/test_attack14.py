"""Attack 14: probes of the split provider (token handling, sanitiser)."""

from __future__ import annotations

import logging

import pytest
from canned_tiktok import SECRET, account, fail, hook_factory, ok, user  # noqa: F401

from tiktok_provider.sanitize import clean_int, is_int_in_bounds


@pytest.mark.parametrize("value", [True, False])
def test_clean_int_refuses_booleans_like_is_int_in_bounds(value):
    # The one sanitiser has two rules: is_int_in_bounds says a bool is not an integer,
    # clean_int (the warehouse's profile snapshot path) stores True as 1.
    assert not is_int_in_bounds("follower_count", value)
    with pytest.raises(ValueError):
        clean_int(value, "follower_count", "Account x")


@pytest.mark.parametrize("value", [b"7", "\u0663"])
def test_clean_int_refuses_bytes_and_non_ascii_digits(value):
    with pytest.raises(ValueError):
        clean_int(value, "follower_count", "Account x")


def test_probe_secrets(monkeypatch, caplog):
    make = hook_factory(monkeypatch)
    grant = ok({}, "x")
    grant.body = {
        "open_id": "acct-1",
        "access_token": "act.NEW-ACCESS",
        "expires_in": 86400,
        "refresh_token": "rft.NEW-REFRESH",
        "refresh_expires_in": 86400 * 365,
        "scope": "user.info.basic,user.info.stats,video.list",
    }
    hook, _script, store, _ = make(fail(401, "access_token_invalid"), grant, user())
    caplog.set_level(logging.DEBUG)
    hook.get_user_info("acct-1")
    texts = caplog.text + repr(hook) + repr(hook.config) + repr(store) + repr(hook.tokens.cache)
    for secret in (
        SECRET,
        "act.NEW-ACCESS",
        "rft.NEW-REFRESH",
        "act.current-access-token",
        "rft.current-refresh-token",
    ):
        assert secret not in texts, secret
    assert store.refreshes == 1
    print(caplog.text)


def test_config_error_names_the_hooks_own_connection(monkeypatch):
    # The advice of a config/auth error named "tiktok_default" whatever connection the hook used.
    from tiktok_provider.errors import TikTokConfigError
    from tiktok_provider.hooks.tiktok import TikTokDisplayHook

    make = hook_factory(monkeypatch)
    make()  # sets AIRFLOW_CONN_TIKTOK_UNIT
    hook = TikTokDisplayHook("tiktok_unit")  # no token store
    with pytest.raises(TikTokConfigError) as info:
        hook.access_token("acct-1")
    assert "tiktok_default" not in str(info.value)
    assert "Fix the tiktok_unit connection" in str(info.value)


def test_an_error_from_a_call_names_the_hooks_own_connection(monkeypatch):
    from tiktok_provider.errors import TikTokConfigError, TikTokOAuthError

    make = hook_factory(monkeypatch)
    hook, *_ = make(host="http://api.example.com")  # a bearer token over plain http to a remote host
    with pytest.raises(TikTokConfigError) as info:
        hook.get_user_info("acct-1")
    assert "Fix the tiktok_unit connection" in str(info.value) and "tiktok_default" not in str(info.value)
    hook, *_ = make(fail(401, "invalid_client"))
    with pytest.raises(TikTokOAuthError) as oauth:
        hook.exchange_code("code", "https://app.example/cb")
    assert "in the tiktok_unit connection" in str(oauth.value) and "tiktok_default" not in str(oauth.value)


@pytest.mark.parametrize(
    ("url", "secrets"),
    [
        # the user part, percent-encoded
        ("redis://:s3cr%40t-redis-pw@redis.internal:6379/3", ["s3cr%40t-redis-pw", "s3cr@t-redis-pw"]),
        # redis-py also reads ?password= (attack13)
        ("rediss://redis.internal:6379/3?password=q-s3cr%2Bt-pw", ["q-s3cr%2Bt-pw", "q-s3cr+t-pw"]),
    ],
)
def test_a_redis_budget_url_password_is_masked_in_logs(monkeypatch, url, secrets):
    from airflow.sdk._shared.secrets_masker.secrets_masker import redact

    make = hook_factory(monkeypatch)
    hook, *_ = make(rate_budget="redis", rate_budget_redis_url=url)
    assert hook.config.rate_budget == "redis"
    line = redact(f"budget store {url} said {' / '.join(secrets)}")
    assert not [secret for secret in secrets if secret in line], line
