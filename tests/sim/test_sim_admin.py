"""The admin API (stats, request log, clock, config, errors) and the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import tiktok_sim
from tiktok_sim.cli import config_from, serve_parser
from tiktok_sim.testing import AdminError, SimulatorProcess, running_simulator

REDIRECT = "https://example.com/cb"


@pytest.fixture(scope="module")
def admin_sim() -> Iterator[SimulatorProcess]:
    with running_simulator(seed=17, accounts=1, videos=25) as process:
        yield process


def test_stats_count_endpoints_statuses_accounts_and_grants(admin_sim: SimulatorProcess) -> None:
    account = admin_sim.connected_account(videos=5)
    admin_sim.admin.reset_stats()
    code = admin_sim.admin.mint_code(account.open_id, ["user.info.basic", "video.list"], REDIRECT)
    pair = admin_sim.exchange_code(code, REDIRECT)
    admin_sim.exchange_code(code, REDIRECT)  # used twice: invalid_grant
    admin_sim.refresh(pair["refresh_token"])
    admin_sim.refresh(pair["refresh_token"])  # rotated: invalid_grant
    admin_sim.refresh(pair["refresh_token"])
    admin_sim.token_request(grant_type="password")
    api = admin_sim.display(pair["access_token"])
    api.user_info("open_id")
    api.user_info("follower_count")  # scope_not_authorized
    api.video_list("id", max_count=2)
    api.video_list("id", max_count=99)  # invalid_params
    stats = admin_sim.admin.stats()
    assert stats["oauth"]["token"] == {
        "authorization_code": {"ok": 1, "invalid_grant": 1},
        "refresh_token": {"ok": 1, "invalid_grant": 2},
        "other": {"unsupported_grant_type": 1},
    }
    assert stats["endpoints"]["user_info"]["requests"] == 2
    assert stats["endpoints"]["user_info"]["statuses"] == {"200": 1, "401": 1}
    assert stats["endpoints"]["user_info"]["errors"] == {"scope_not_authorized": 1}
    assert stats["endpoints"]["video_list"]["statuses"] == {"200": 1, "400": 1}
    assert stats["accounts"][account.open_id]["endpoints"] == {"oauth_token": 2, "user_info": 2, "video_list": 2}
    assert stats["total"] == 10
    assert admin_sim.admin.reset_stats()["total"] == 0
    assert admin_sim.admin.requests() == []


def test_the_request_log_describes_requests_without_secrets(admin_sim: SimulatorProcess) -> None:
    admin_sim.admin.reset_stats()
    account = admin_sim.connected_account(videos=5)
    verifier_code = admin_sim.admin.mint_code(account.open_id, ["video.list"], REDIRECT)
    pair = admin_sim.exchange_code(verifier_code, REDIRECT, "some-verifier-value-1234567890")
    refreshed = admin_sim.refresh(account.tokens.refresh_token)
    account.api.video_list("id,title", max_count=3, cursor=1_700_000_000_000)
    account.api.video_query("id", ["1", "2"])
    admin_sim.session.post(
        f"{admin_sim.base_url}/v2/oauth/revoke/",
        data={
            "client_key": admin_sim.client_key,
            "client_secret": admin_sim.client_secret,
            "token": pair["access_token"],
        },
        timeout=10,
    )
    log = admin_sim.admin.requests()
    assert [row["endpoint"] for row in log] == [
        "oauth_token",
        "oauth_token",
        "oauth_token",
        "video_list",
        "video_query",
        "oauth_revoke",
    ]
    listing = log[3]
    assert listing["method"] == "POST" and listing["path"] == "/v2/video/list/"
    assert listing["open_id"] == account.open_id and listing["status"] == 200 and listing["error_code"] == "ok"
    assert listing["fields"] == ["id", "title"]
    assert listing["body"]["max_count"] == 3 and listing["body"]["cursor"] == 1_700_000_000_000
    assert log[4]["body"]["video_ids"] == 2
    assert log[5]["body"]["token_kind"] == "access"
    assert all(row["wall_time"] > 0 and row["log_id"] for row in log)
    assert [row["seq"] for row in admin_sim.admin.requests(since=log[3]["seq"])] == [log[4]["seq"], log[5]["seq"]]
    assert [row["endpoint"] for row in admin_sim.admin.requests(endpoint="video_query")] == ["video_query"]
    everything = json.dumps(
        [log, admin_sim.admin.stats(), admin_sim.admin.tokens(account.open_id), admin_sim.admin.config()]
    )
    secrets = [
        account.tokens.access_token,
        account.tokens.refresh_token,
        pair["access_token"],
        pair["refresh_token"],
        refreshed["access_token"],
        refreshed["refresh_token"],
        verifier_code,
        "some-verifier-value-1234567890",
        admin_sim.client_secret,
    ]
    assert not [secret for secret in secrets if secret in everything]
    assert not [secret for secret in secrets if secret in admin_sim.log_text()]


def test_the_clock_advances_jumps_and_freezes(admin_sim: SimulatorProcess) -> None:
    start = admin_sim.admin.now()
    assert admin_sim.admin.advance_clock(3600) == pytest.approx(start + 3600, abs=5)
    assert admin_sim.admin.set_clock("2030-01-01T00:00:00Z") == pytest.approx(1893456000, abs=5)
    frozen = admin_sim.admin.freeze_clock()
    time.sleep(0.05)
    assert admin_sim.admin.now() == frozen
    assert admin_sim.admin.advance_clock(10) == frozen + 10
    assert admin_sim.admin.clock()["frozen"] is True
    admin_sim.admin.unfreeze_clock()
    assert admin_sim.admin.clock()["frozen"] is False


@pytest.mark.parametrize(
    "call",
    [
        lambda admin: admin.account("no-such-account"),
        lambda admin: admin.video_ids("no-such-account"),
        lambda admin: admin.mint_code("no-such-account", ["video.list"], REDIRECT),
        lambda admin: admin.delete_video("1234567890123456789"),
        lambda admin: admin.video("not-a-number"),
        lambda admin: admin.mint_code(admin.accounts()[0]["open_id"], ["video.delete"], REDIRECT),
        lambda admin: admin.mint_code(admin.accounts()[0]["open_id"], [], REDIRECT),
        lambda admin: admin.set_config(seed=1),
        lambda admin: admin.set_config(rate_scope="galaxy"),
        lambda admin: admin.set_config(rate_limit=0),
        lambda admin: admin.set_config(no_such_option=1),
    ],
    ids=[
        "account",
        "video-ids",
        "code-account",
        "delete-unknown",
        "bad-video-id",
        "unknown-scope",
        "no-scope",
        "fixed-option",
        "bad-rate-scope",
        "zero-limit",
        "unknown-option",
    ],
)
def test_bad_admin_calls_say_what_is_wrong(admin_sim: SimulatorProcess, call: object) -> None:
    assert callable(call)
    with pytest.raises(AdminError) as refused:
        call(admin_sim.admin)
    assert refused.value.status in (400, 404)
    assert refused.value.detail


def test_health_and_config_never_show_the_secret(admin_sim: SimulatorProcess) -> None:
    health = admin_sim.admin.health()
    assert health["status"] == "ok" and health["client_key"] == admin_sim.client_key
    config = admin_sim.admin.config()
    assert "client_secret" not in config and config["seed"] == 17


def _cli_env() -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("TIKTOK_SIM_")}
    env["PYTHONPATH"] = str(Path(tiktok_sim.__file__).resolve().parent.parent)
    return env


def test_cli_mint_code_prints_a_code_that_exchanges(admin_sim: SimulatorProcess) -> None:
    open_id = admin_sim.admin.accounts()[0]["open_id"]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tiktok_sim",
            "mint-code",
            "--url",
            admin_sim.base_url,
            "--open-id",
            open_id,
            "--scopes",
            "user.info.basic,video.list",
            "--redirect-uri",
            REDIRECT,
        ],
        capture_output=True,
        text=True,
        env=_cli_env(),
        timeout=30,
        check=True,
    )
    code = result.stdout.strip()
    assert code and "\n" not in code
    answer = admin_sim.exchange_code(code, REDIRECT)
    assert answer["open_id"] == open_id and answer["scope"] == "user.info.basic,video.list"
    listed = subprocess.run(
        [sys.executable, "-m", "tiktok_sim", "accounts", "--url", admin_sim.base_url],
        capture_output=True,
        text=True,
        env=_cli_env(),
        timeout=30,
        check=True,
    )
    assert open_id in [row["open_id"] for row in json.loads(listed.stdout)]


def test_cli_generates_a_secret_without_printing_it() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "tiktok_sim", "--port", "0", "--accounts", "1", "--videos", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_cli_env(),
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(5)]
    finally:
        process.terminate()
        process.wait(10)
    text = "".join(lines)
    assert text.startswith("tiktok-sim listening on http://127.0.0.1:")
    assert "client_key: sim-client-key" in text
    assert "not shown" in text
    assert "account 0: open_id=" in text


def test_flags_beat_environment_variables_which_beat_defaults() -> None:
    parser = serve_parser()
    env = {"TIKTOK_SIM_SEED": "5", "TIKTOK_SIM_CLIENT_SECRET": "from-env", "TIKTOK_SIM_RATE_SCOPE": "token"}
    config = config_from(parser.parse_args(["--seed", "9", "--port", "0"]), env)
    assert (config.seed, config.client_secret, config.rate_scope, config.port) == (9, "from-env", "token", 0)
    assert config_from(parser.parse_args([]), {}).rate_limit == 600
    with pytest.raises(ValueError):
        config_from(parser.parse_args(["--rate-scope", "galaxy"]), {})
