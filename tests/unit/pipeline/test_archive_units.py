"""The cover archive's pure parts: magic bytes, items from API objects, settings, history inputs."""

from __future__ import annotations

import http.client
import threading

import pytest

from tiktok_pipeline import archive
from tiktok_pipeline.archive import avatar_items, cover_items, sniff
from tiktok_pipeline.egress import HostPolicy
from tiktok_sim.covers import JPEG, image

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 20
GIF = b"GIF89a" + b"\0" * 20
WEBP = b"RIFF\x10\0\0\0WEBPVP8 " + b"\0" * 10
HEIC = b"\0\0\0\x18ftypheic\0\0\0\0mif1heic"


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (JPEG, "image/jpeg"),
        (image("cover", "1", 3), "image/jpeg"),
        (PNG, "image/png"),
        (GIF, "image/gif"),
        (WEBP, "image/webp"),
        (HEIC, "image/heic"),
        (b"<html><body>503</body></html>", None),
        (b"", None),
        (b"RIFF\x10\0\0\0WAVEfmt ", None),  # RIFF but audio
        (b"\0\0\0\x18ftypmp42", None),  # ISO media but a video
        (b"\xff\xd8", None),  # cut short
    ],
)
def test_sniff(body: bytes, kind: str | None) -> None:
    assert sniff(body) == kind


def test_every_sniffed_type_has_an_extension_and_a_declared_type() -> None:
    assert set(archive.EXTENSIONS) == set(archive.DECLARED_TYPES.values())


def test_cover_items_skip_videos_without_id_or_url() -> None:
    videos = [
        {"id": "1", "cover_image_url": "https://cdn/a.jpeg"},
        {"id": "2", "cover_image_url": ""},
        {"id": 3, "cover_image_url": "https://cdn/c.jpeg"},
        {"id": "4"},
        {"cover_image_url": "https://cdn/e.jpeg"},
    ]
    assert cover_items("o", videos) == [archive.CoverItem("cover", "1", "o", "https://cdn/a.jpeg")]


def test_avatar_items_take_the_largest_size() -> None:
    user = {"avatar_url": "https://cdn/168.jpeg", "avatar_large_url": "https://cdn/1080.jpeg"}
    assert avatar_items("o", user) == [archive.CoverItem("avatar", "o", "o", "https://cdn/1080.jpeg")]
    assert avatar_items("o", {"avatar_url_100": "https://cdn/100.jpeg"})[0].url == "https://cdn/100.jpeg"
    assert avatar_items("o", {"display_name": "x"}) == []


def test_settings_default_to_a_folder_under_airflow_home(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    for name in ("PATH", "CONN_ID", "MAX_BYTES", "PACE_SECONDS"):
        monkeypatch.delenv(f"AIRFLOW__TIKTOK__COVER_ARCHIVE_{name}", raising=False)
    settings = archive.archive_settings()
    assert settings.base == f"file://{tmp_path}/covers"
    assert (settings.conn_id, settings.max_bytes) == (None, 5 * 1024 * 1024)


def test_settings_from_airflow_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__TIKTOK__COVER_ARCHIVE_PATH", "s3://bucket/covers")
    monkeypatch.setenv("AIRFLOW__TIKTOK__COVER_ARCHIVE_CONN_ID", "aws_covers")
    monkeypatch.setenv("AIRFLOW__TIKTOK__COVER_ARCHIVE_MAX_BYTES", "1048576")
    settings = archive.archive_settings()
    assert (settings.base, settings.conn_id, settings.max_bytes) == ("s3://bucket/covers", "aws_covers", 1048576)
    monkeypatch.setenv("AIRFLOW__TIKTOK__COVER_ARCHIVE_MAX_BYTES", "0")
    with pytest.raises(ValueError, match="cover_archive_max_bytes"):
        archive.archive_settings()


def test_history_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from tiktok_warehouse.history import young_days_setting

    monkeypatch.delenv("AIRFLOW__TIKTOK__EARLY_HISTORY_DAYS", raising=False)
    assert young_days_setting() == 14
    monkeypatch.setenv("AIRFLOW__TIKTOK__EARLY_HISTORY_DAYS", "3")
    assert young_days_setting() == 3
    monkeypatch.setenv("AIRFLOW__TIKTOK__EARLY_HISTORY_DAYS", "-1")
    with pytest.raises(ValueError, match="early_history_days"):
        young_days_setting()


def test_a_foreign_redirect_target_is_another_origin() -> None:
    assert archive._origin("https://P16.tiktokcdn.com/a?x=1") == archive._origin("https://p16.tiktokcdn.com/b")
    assert archive._origin("https://p16.tiktokcdn.com/a") != archive._origin("http://p16.tiktokcdn.com/a")
    assert archive._origin("https://p16.tiktokcdn.com/a") != archive._origin("https://evil.example/a")


def test_pace_spaces_downloads(tmp_path) -> None:
    now = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(round(seconds, 3))
        now[0] += seconds

    archiver = archive.CoverArchiver.__new__(archive.CoverArchiver)
    archiver.settings = archive.ArchiveSettings(base=f"file://{tmp_path}", pace_seconds=0.5)
    archiver._sleep, archiver._clock = sleep, lambda: now[0]
    archiver._pace_lock = threading.Lock()
    archiver._last_request = -1e18
    for _ in range(3):
        archiver._pace()
    assert slept == [0.5, 0.5]


def test_a_refusal_names_the_host_and_its_class_never_the_query() -> None:
    archiver = archive.CoverArchiver.__new__(archive.CoverArchiver)
    archiver.policy = HostPolicy()  # nothing allowed
    with pytest.raises(archive.Refused) as refused:
        archiver._check_url("http://169.254.169.254/latest/meta-data/iam?x-signature=SECRET&x-expires=1")
    text = str(refused.value)
    assert text.startswith("host 169.254.169.254 is not a public address (link-local)")
    assert "cover_archive_private_hosts" in text
    assert "SECRET" not in text and "meta-data" not in text
    archiver._check_url("https://p16-sign.tiktokcdn-us.com/obj?x-signature=SECRET")  # a name: on connect


def test_private_hosts_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW__TIKTOK__COVER_ARCHIVE_PRIVATE_HOSTS", raising=False)
    assert archive.archive_settings().private_hosts == frozenset()
    monkeypatch.setenv("AIRFLOW__TIKTOK__COVER_ARCHIVE_PRIVATE_HOSTS", " minio.internal, 10.0.0.5:9000 ,,")
    assert archive.archive_settings().private_hosts == {"minio.internal", "10.0.0.5:9000"}
    monkeypatch.setenv("AIRFLOW__TIKTOK__COVER_ARCHIVE_PRIVATE_HOSTS", "minio.internal:nine")
    with pytest.raises(ValueError, match=r"\[tiktok\] cover_archive_private_hosts: not a host or host:port"):
        archive.archive_settings()


@pytest.mark.parametrize(
    ("length", "over"),
    [
        ("5242880", False),
        ("5242881", True),
        ("0005242880", False),
        ("0", False),
        ("9" * 5000, True),
        ("1" + "0" * 7, True),
    ],
)
def test_too_large_compares_digits_of_any_length(length: str, over: bool) -> None:
    # int() refuses 4,300 digits or more: the ValueError aborted the whole run.
    assert archive._too_large(length, 5 * 1024 * 1024) is over


def _wrapped(inner: BaseException) -> BaseException:
    """``inner`` wrapped as requests hands it over: ConnectionError(ProtocolError("Connection aborted.", inner))."""
    import requests
    import urllib3.exceptions

    return requests.exceptions.ConnectionError(urllib3.exceptions.ProtocolError("Connection aborted.", inner))


@pytest.mark.parametrize(
    ("inner", "what"),
    [
        (http.client.LineTooLong("header line"), "a header line over 64 KiB"),
        (http.client.LineTooLong("status line"), "a status line over 64 KiB"),
        (http.client.HTTPException("got more than 100 headers"), "more than 100 header lines"),
        (http.client.BadStatusLine("HTXP/1.1 200 OK\r\n"), "no HTTP status line"),
        (http.client.UnknownProtocol("HTTP/2.0"), "not HTTP/1.x"),
        (http.client.RemoteDisconnected("Remote end closed connection without response"), None),
        (http.client.IncompleteRead(b"", 10), None),
        (ConnectionResetError(104, "Connection reset by peer"), None),
    ],
)
def test_malformed_tells_a_bad_answer_from_a_cut_connection(inner: BaseException, what: str | None) -> None:
    assert archive._malformed(_wrapped(inner)) == what
