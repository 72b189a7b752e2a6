"""Archive covers and avatars through Airflow's ObjectStoragePath, once per content.

TikTok's cover links live 6 hours and the cover of a removed or private video is gone for good, so
each cover (and each account's avatar) is copied to object storage -- a local folder by default,
S3 / GCS / Azure through their providers -- and recorded in ``tiktok.cover_archive``:

- **Stored by content**: the object is ``<base>/<sha256[:2]>/<sha256>.<ext>`` and
  ``tiktok.archive_blobs`` holds one row per stored object, so the same bytes are never written
  twice (two videos with one image share it). A subject's rows in ``cover_archive`` are its
  versions; the one with the latest ``checked_at`` is its current image. Nothing is ever deleted
  when a video goes away: a removed video keeps its archived cover. Only purging an account
  frees its images: the daily sweep (:mod:`tiktok_pipeline.archive_sweep`) deletes every object
  no row refers to any more.
- **Changed?** The URL changes every 6 hours even when the image does not, so it cannot tell. The
  archive keeps the CDN's ``ETag`` and asks again with ``If-None-Match``: an unchanged cover
  answers 304 and costs no body. Without an ETag it downloads and compares the SHA-256.
- **Untrusted content**: only ``http(s)`` links; only from public addresses -- never loopback,
  private, link-local (cloud metadata), multicast or another special-purpose address, checked on
  the address actually connected to, every redirect too (:mod:`tiktok_pipeline.egress`), unless
  the host is the TikTok connection's API host and port or listed in
  ``cover_archive_private_hosts``; no redirect to another host (redirects are
  followed by hand, same scheme and host only, at most :data:`MAX_REDIRECTS`); a size cap
  (``Content-Length`` and the bytes actually read, default 5 MiB); images only -- the declared
  ``Content-Type`` must be an image type TikTok serves and the magic bytes must be JPEG, PNG,
  WebP, GIF or HEIC/HEIF; a malformed answer (a ``Content-Length`` that is not plain digits, more
  than 100 header lines, a header line over 64 KiB, no status line) is refused; connect and read
  timeouts, and a deadline for the whole download (``deadline_seconds``, default 60: every connect,
  answer, redirect, byte and retry, however slowly the server drips them); paced (a minimum gap
  between downloads) and retried a bounded number of times on connection errors, 429 and 5xx. A
  refused or failed download is logged with the video id (or open_id), the account and the reason
  (never the link's query string: it carries a signature; what the server said, printable and
  cut short), and the others go on; a refusal is never retried. A download cut by its deadline is
  a failure, not a refusal (the next run tries again: it says nothing about the image), and is
  not tried again in the run: the deadline is the most one cover may cost a worker.

Configuration (``airflow.cfg`` section ``[tiktok]``, or ``AIRFLOW__TIKTOK__...``):

- ``cover_archive_path``: the base, e.g. ``file:///data/covers`` or ``s3://bucket/covers``;
  default ``file://$AIRFLOW_HOME/covers``.
- ``cover_archive_conn_id``: the Airflow connection of the storage (e.g. an ``aws`` connection);
  none for a local folder.
- ``cover_archive_max_bytes`` (default 5 MiB), ``cover_archive_pace_seconds`` (default 0.02).
- ``cover_archive_private_hosts``: non-public hosts covers may come from besides the API host,
  comma-separated ``host`` (any port) or ``host:port``; default none.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tiktok_pipeline.egress import BlockedAddress, Deadline, GuardedAdapter, HostPolicy
from tiktok_provider.errors import escaped

log = logging.getLogger(__name__)

CONFIG_SECTION = "tiktok"
DEFAULT_MAX_BYTES = 5 * 1024 * 1024
DEFAULT_PACE_SECONDS = 0.02
DEFAULT_TIMEOUT = (5.0, 20.0)
DEFAULT_RETRIES = 2
DEFAULT_WORKERS = 4
DEFAULT_DEADLINE_SECONDS = 60.0
MAX_REDIRECTS = 3
CHUNK = 64 * 1024
PRIVATE_HOSTS_OPTION = "cover_archive_private_hosts"
#: The longest reason recorded and logged for one cover; each piece of server text in it is cut shorter.
MAX_REASON = 300
#: The longest ETag kept (and sent back): a longer one is not a validator we need.
MAX_ETAG = 512

#: Declared content types accepted, and the sniffed type each stands for.
DECLARED_TYPES: dict[str, str] = {
    "image/jpeg": "image/jpeg",
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "image/png": "image/png",
    "image/webp": "image/webp",
    "image/gif": "image/gif",
    "image/heic": "image/heic",
    "image/heif": "image/heic",
}
EXTENSIONS: dict[str, str] = {
    "image/jpeg": "jpg",
    "image/png": "png",
    "image/webp": "webp",
    "image/gif": "gif",
    "image/heic": "heic",
}
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}


def sniff(body: bytes) -> str | None:
    """Return the image type the magic bytes of ``body`` show, or ``None`` if none we accept."""
    if body.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if body.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if body[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if body[:4] == b"RIFF" and body[8:12] == b"WEBP":
        return "image/webp"
    if body[4:8] == b"ftyp" and body[8:12] in _HEIF_BRANDS:
        return "image/heic"
    return None


class Refused(Exception):
    """The answer is not archived: not an image, too large, a foreign redirect, a 4xx ..."""


class Retryable(Exception):
    """A transient failure: connection error, timeout, 429 or 5xx; ``tries``: how many were made."""

    tries = 1


@dataclass(frozen=True)
class Downloaded:
    """A 200 answer that passed every check (``body`` is ``None`` for a 304)."""

    body: bytes | None
    content_type: str | None = None
    etag: str | None = None


@dataclass(frozen=True)
class ArchiveSettings:
    """Where and how covers are archived."""

    base: str
    conn_id: str | None = None
    max_bytes: int = DEFAULT_MAX_BYTES
    pace_seconds: float = DEFAULT_PACE_SECONDS
    timeout: tuple[float, float] = DEFAULT_TIMEOUT
    retries: int = DEFAULT_RETRIES
    backoff_seconds: float = 0.5
    #: Downloads in flight at once (the pace still spaces their starts).
    workers: int = DEFAULT_WORKERS
    #: The longest one cover's download may take -- every connect, answer, redirect, byte and retry:
    #: the read timeout only bounds each wait for a next piece, so a server dripping its headers or
    #: body would hold the task for ever.
    deadline_seconds: float = DEFAULT_DEADLINE_SECONDS
    #: Hosts (``host`` or ``host:port``) fetched from although their address is not public; the
    #: API host is added by :class:`CoverArchiver` (its ``api_url``).
    private_hosts: frozenset[str] = frozenset()


def default_base() -> str:
    """``file://$AIRFLOW_HOME/covers`` (``~/airflow`` when AIRFLOW_HOME is unset)."""
    home = os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow")
    return f"file://{os.path.abspath(home)}/covers"


def archive_settings() -> ArchiveSettings:
    """Read ``[tiktok] cover_archive_*`` from Airflow's configuration."""
    from airflow.configuration import conf

    def option(name: str) -> str:
        return (conf.get(CONFIG_SECTION, name, fallback="") or "").strip()

    max_bytes = int(option("cover_archive_max_bytes") or DEFAULT_MAX_BYTES)
    pace = float(option("cover_archive_pace_seconds") or DEFAULT_PACE_SECONDS)
    if not 0 < max_bytes <= 100 * 1024 * 1024 or not 0 <= pace <= 60:
        raise ValueError("cover_archive_max_bytes must be in (0, 100 MiB] and cover_archive_pace_seconds in [0, 60]")
    private_hosts = frozenset(h.strip() for h in option(PRIVATE_HOSTS_OPTION).split(",") if h.strip())
    try:
        HostPolicy.of(private_hosts)
    except ValueError as exc:
        raise ValueError(f"[{CONFIG_SECTION}] {PRIVATE_HOSTS_OPTION}: {exc}") from None
    return ArchiveSettings(
        base=option("cover_archive_path") or default_base(),
        conn_id=option("cover_archive_conn_id") or None,
        max_bytes=max_bytes,
        pace_seconds=pace,
        private_hosts=private_hosts,
    )


@dataclass(frozen=True)
class CoverItem:
    """One image to archive: a video's cover (subject = video id) or an avatar (subject = open_id)."""

    kind: str
    subject_id: str
    open_id: str
    url: str


def cover_items(open_id: str, videos: Iterable[Mapping[str, Any]]) -> list[CoverItem]:
    """The covers of API video objects (those with an id and a cover URL)."""
    return [
        CoverItem("cover", v["id"], open_id, v["cover_image_url"])
        for v in videos
        if isinstance(v.get("id"), str) and isinstance(v.get("cover_image_url"), str) and v["cover_image_url"]
    ]


def avatar_items(open_id: str, user: Mapping[str, Any]) -> list[CoverItem]:
    """The avatar of an API user object: the largest size it has."""
    for name in ("avatar_large_url", "avatar_url", "avatar_url_100"):
        url = user.get(name)
        if isinstance(url, str) and url:
            return [CoverItem("avatar", open_id, open_id, url)]
    return []


@dataclass
class ArchiveResult:
    """What one run did; ``refused`` and ``failed`` hold ``(subject_id, reason)``."""

    checked: int = 0
    downloaded: int = 0
    bytes_downloaded: int = 0
    not_modified: int = 0
    unchanged: int = 0
    new_versions: int = 0
    blobs_written: int = 0
    refused: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "downloaded": self.downloaded,
            "bytes_downloaded": self.bytes_downloaded,
            "not_modified": self.not_modified,
            "unchanged": self.unchanged,
            "new_versions": self.new_versions,
            "blobs_written": self.blobs_written,
            "refused": len(self.refused),
            "failed": len(self.failed),
        }


def _blocked(exc: BlockedAddress) -> Refused:
    """The refusal of a link to a non-public address: the host and its class, never the rest of the link."""
    return Refused(f"{exc}; if the host is yours, list it in [{CONFIG_SECTION}] {PRIVATE_HOSTS_OPTION}")


def _origin(url: str) -> tuple[str, str]:
    """``(scheme, netloc)`` of ``url`` in lower case; ``ValueError`` for a link the URL parser rejects."""
    parts = urlsplit(url)
    return parts.scheme.lower(), (parts.netloc or "").lower()


def _etag(response: requests.Response) -> str | None:
    """The answer's ``ETag`` if it can be kept and sent back: printable (a NUL would fail the row's INSERT), short."""
    etag = response.headers.get("ETag")
    return etag if etag and etag.isprintable() and len(etag) <= MAX_ETAG else None


def _malformed(exc: BaseException) -> str | None:
    """What is wrong with an answer http.client could not read, or ``None`` if it was cut in transit.

    requests wraps http.client's error (in urllib3's): it is looked for among the arguments and causes.
    """
    seen: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo:
        error = todo.pop()
        if any(error is s for s in seen):
            continue
        seen.append(error)
        if isinstance(error, http.client.HTTPException):
            if isinstance(error, http.client.RemoteDisconnected | http.client.IncompleteRead):
                return None  # the connection ended early: the network's doing, or the server's hiccup
            if isinstance(error, http.client.LineTooLong):
                return "a status line over 64 KiB" if "status" in str(error) else "a header line over 64 KiB"
            if isinstance(error, http.client.UnknownProtocol):
                return "not HTTP/1.x"
            if isinstance(error, http.client.BadStatusLine):
                return "no HTTP status line"
            if "headers" in str(error):
                return f"more than {http.client._MAXHEADERS} header lines"
            return "an unreadable HTTP head"
        todo.extend(a for a in error.args if isinstance(a, BaseException))
        todo.extend(e for e in (error.__cause__, error.__context__) if e is not None)
    return None


def _too_large(length: str, cap: int) -> bool:
    """Whether the plain-digits ``length`` is over ``cap`` (int() refuses a number of 4,300 digits or more)."""
    digits = length.lstrip("0") or "0"
    return len(digits) > len(str(cap)) or int(digits) > cap


#: A socket timeout set to the time left can end a hair before the clock says the deadline passed.
DEADLINE_SLACK_SECONDS = 0.1


def _out_of_time(deadline: Deadline) -> bool:
    """Whether an error now is the deadline's doing (it passed, or its last timeout used what was left)."""
    return deadline.passed or deadline.remaining() < DEADLINE_SLACK_SECONDS


class CoverArchiver:
    """Download, check and store covers; record them in the warehouse.

    :param api_url: the TikTok connection's base URL: its host and port may serve covers from a
        non-public address (the simulator serves its covers itself); ``None`` allows no such host.
    """

    def __init__(
        self,
        engine: Engine,
        settings: ArchiveSettings,
        *,
        api_url: str | None = None,
        session_factory: Callable[[], requests.Session] = requests.Session,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.policy = HostPolicy.of(settings.private_hosts, api_url=api_url)
        self._session_factory = session_factory
        self._local = threading.local()
        self._sleep = sleep
        self._clock = clock
        self._pace_lock = threading.Lock()
        self._last_request = -1e18
        self._base = self._storage_base()

    def _storage_base(self) -> Any:
        from airflow.sdk import ObjectStoragePath

        base = ObjectStoragePath(self.settings.base, conn_id=self.settings.conn_id)
        self._is_local = base.protocol in ("file", "local")
        if self._is_local:
            base.mkdir(parents=True, exist_ok=True)
        return base

    def object_path(self, sha256: str, content_type: str) -> Any:
        """The ObjectStoragePath of the blob with ``sha256``."""
        return self._base / sha256[:2] / f"{sha256}.{EXTENSIONS[content_type]}"

    def _object_exists(self, path: str) -> bool:
        from airflow.sdk import ObjectStoragePath

        try:
            return bool(ObjectStoragePath(path, conn_id=self.settings.conn_id).exists())
        except Exception:  # storage unreachable: writing the same bytes again is harmless
            return False

    def open(self, path: str) -> Any:
        """Open a stored blob by the ``path`` recorded in the warehouse (for reading)."""
        from airflow.sdk import ObjectStoragePath

        return ObjectStoragePath(path, conn_id=self.settings.conn_id).open("rb")

    # -- downloading -----------------------------------------------------------------------
    def _transport(self) -> tuple[requests.Session, GuardedAdapter]:
        """This thread's HTTP session and its guarded adapter (requests sessions are not shared between threads)."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._session_factory()
            session.headers["User-Agent"] = "tiktok-pipeline-cover-archive"
            adapter = GuardedAdapter(self.policy)  # public addresses only, checked on every connect
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            self._local.session, self._local.adapter = session, adapter
        return session, self._local.adapter

    @property
    def session(self) -> requests.Session:
        """This thread's HTTP session."""
        return self._transport()[0]

    def _too_slow(self) -> Retryable:
        return Retryable(
            f"slower than {self.settings.deadline_seconds:g} s, the deadline of one download and its tries"
        )

    def _pace(self) -> None:
        # Each download starts at least pace_seconds after the previous one, across the workers.
        with self._pace_lock:
            start = max(self._clock(), self._last_request + self.settings.pace_seconds)
            self._last_request = start
        wait = start - self._clock()
        if wait > 0:
            self._sleep(wait)

    def _get_once(self, url: str, etag: str | None, deadline: Deadline) -> Downloaded:
        try:
            origin = _origin(url)
        except ValueError:  # ``http://[::1/...``: this cover's refusal, the others go on
            raise Refused("not a valid link") from None
        headers = {"If-None-Match": etag} if etag else {}
        for _hop in range(MAX_REDIRECTS + 1):
            if origin[0] not in ("http", "https"):
                raise Refused(f"not an http(s) link ({escaped(origin[0], 40) or 'no scheme'})")
            self._pace()
            left = deadline.remaining()
            if left <= 0:
                raise self._too_slow()
            connect, read = self.settings.timeout
            try:
                response = self.session.get(
                    url,
                    headers=headers,
                    timeout=(min(connect, left), min(read, left)),
                    allow_redirects=False,
                    stream=True,
                )
            except BlockedAddress as exc:
                raise _blocked(exc) from None
            except requests.exceptions.InvalidURL:  # no host, one the client cannot encode: not transient
                raise Refused("not a valid link") from None
            except requests.exceptions.InvalidHeader:  # urllib3 reads Content-Length: 1, 2 before we can
                raise Refused("malformed answer (Content-Length with more than one value)") from None
            except requests.RequestException as exc:
                if _out_of_time(deadline):  # the deadline shut the socket (or the last timeout was what was left)
                    raise self._too_slow() from None
                malformed = _malformed(exc)
                if malformed is not None:  # the server's answer, not the network: trying again gets it again
                    raise Refused(f"malformed answer ({malformed})") from None
                raise Retryable(type(exc).__name__) from None
            except ValueError:  # requests parses a redirect's Location even when not following it
                raise Refused("redirect to an invalid link") from None
            with response:
                if response.is_redirect:
                    try:
                        target = urljoin(url, response.headers.get("Location", ""))
                        target_origin = _origin(target)
                    except ValueError:
                        raise Refused("redirect to an invalid link") from None
                    self._check_url(target)  # so a redirect to a private address says so
                    if target_origin != origin:
                        raise Refused(f"redirect to another host ({escaped(target_origin[1]) or 'none'})")
                    url = target
                    continue
                return self._read(response, etag, deadline)
        raise Refused(f"more than {MAX_REDIRECTS} redirects")

    def _check_url(self, url: str) -> None:
        """Refuse a link whose host spells a non-public address (a name is checked when connected)."""
        try:
            self.policy.check_url(url)
        except BlockedAddress as exc:
            raise _blocked(exc) from None

    def _read(self, response: requests.Response, etag: str | None, deadline: Deadline) -> Downloaded:
        status = response.status_code
        if status == 304 and etag:
            return Downloaded(None, etag=_etag(response) or etag)
        if status == 429 or status >= 500:
            raise Retryable(f"HTTP {status}")
        if status != 200:
            raise Refused(f"HTTP {status}")
        declared = (response.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if declared not in DECLARED_TYPES:
            raise Refused(f"not an image (Content-Type {escaped(declared, 60) or 'missing'})")
        cap = self.settings.max_bytes
        length = response.headers.get("Content-Length")
        if length is not None:
            # Plain ASCII digits only: int() (and so urllib3) also takes "+12", "1_2", " 12" and other
            # scripts' digits, and would read the body to a length the server never meant.
            if not (length.isascii() and length.isdigit()):
                raise Refused(f"malformed answer (Content-Length {escaped(length, 40) or 'empty'})")
            if _too_large(length, cap):
                raise Refused(f"larger than {cap} bytes (Content-Length {escaped(length, 40)})")
        chunks, total = [], 0
        try:
            for chunk in response.iter_content(CHUNK):
                total += len(chunk)
                if total > cap:
                    raise Refused(f"larger than {cap} bytes")
                chunks.append(chunk)
                if deadline.passed:  # strictly: a body received within the deadline is kept
                    raise self._too_slow()
        except requests.RequestException as exc:
            raise (self._too_slow() if _out_of_time(deadline) else Retryable(type(exc).__name__)) from None
        body = b"".join(chunks)
        sniffed = sniff(body)
        if sniffed is None:
            raise Refused(f"not an image (declared {declared}, the bytes are no JPEG/PNG/WebP/GIF/HEIC)")
        return Downloaded(body, content_type=sniffed, etag=_etag(response))

    def download(self, url: str, etag: str | None = None) -> Downloaded:
        """Fetch ``url`` with every check, retried on transient failures; raises Refused / Retryable.

        Every try, redirect and backoff fits in one deadline: a try it cuts is not tried again, and
        a backoff that would end past it is not waited for (the last failure is told).
        """
        adapter = self._transport()[1]
        with Deadline(self.settings.deadline_seconds, clock=self._clock) as deadline, adapter.within(deadline):
            attempt = 0
            while True:
                try:
                    return self._get_once(url, etag, deadline)
                except Retryable as exc:
                    exc.tries = attempt + 1
                    backoff = self.settings.backoff_seconds * 2**attempt
                    if attempt >= self.settings.retries or deadline.passed or backoff >= deadline.remaining():
                        raise
                    self._sleep(backoff)
                    attempt += 1

    # -- the warehouse and the storage ---------------------------------------------------------
    def _current(self, items: Sequence[CoverItem]) -> dict[tuple[str, str], tuple[str, str | None]]:
        if not items:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT DISTINCT ON (kind, subject_id) kind, subject_id, sha256, etag FROM tiktok.cover_archive"
                    " WHERE (kind, subject_id) IN (SELECT * FROM unnest(CAST(:kinds AS text[]), CAST(:ids AS text[])))"
                    " ORDER BY kind, subject_id, checked_at DESC, archived_at DESC"
                ),
                {"kinds": [i.kind for i in items], "ids": [i.subject_id for i in items]},
            )
            return {(r.kind, r.subject_id): (r.sha256, r.etag) for r in rows}

    def _touch(self, item: CoverItem, sha256: str, etag: str | None, now: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    "UPDATE tiktok.cover_archive SET checked_at = :now, etag = coalesce(:etag, etag)"
                    " WHERE kind = :kind AND subject_id = :subject AND sha256 = :sha"
                ),
                {"now": now, "etag": etag, "kind": item.kind, "subject": item.subject_id, "sha": sha256},
            )

    def _store(self, item: CoverItem, got: Downloaded, sha256: str, now: datetime, result: ArchiveResult) -> None:
        assert got.body is not None and got.content_type is not None
        path = self.object_path(sha256, got.content_type)
        with self.engine.begin() as conn:
            # The account first: a purge waits for this transaction (and its cascade then takes what we
            # record, for the sweep to delete), or has happened and nothing is written at all.
            if not conn.execute(
                text("SELECT 1 FROM tiktok.accounts WHERE open_id = :o FOR KEY SHARE"), {"o": item.open_id}
            ).scalar():
                result.refused.append((item.subject_id, "the account was purged meanwhile"))
                log.info("Not archiving the %s of %s: account %s was purged", item.kind, item.subject_id, item.open_id)
                return
            # FOR KEY SHARE: the sweep of unreferenced blobs (archive_sweep) cannot delete this blob
            # between our look and our reference to it; if it deleted it first, we find no row here.
            stored = conn.execute(
                text("SELECT path FROM tiktok.archive_blobs WHERE sha256 = :sha FOR KEY SHARE"), {"sha": sha256}
            ).scalar()
            if stored is not None and not self._object_exists(stored):
                # A sweep deleted the object but could not commit (the row came back): write it again.
                log.warning("The archived image %s had lost its object; writing it again", sha256)
                stored = None
            if stored is None:
                # Written before its row: a crash in between leaves an object that the next run rewrites.
                if self._is_local:
                    path.parent.mkdir(parents=True, exist_ok=True)  # object stores have no folders
                with path.open("wb") as out:
                    out.write(got.body)
                result.blobs_written += 1
                # Recorded without the connection id ObjectStoragePath would put in the URL (s3://conn@bucket/...).
                stored = f"{self.settings.base.rstrip('/')}/{sha256[:2]}/{path.name}"
            conn.execute(
                text(
                    "INSERT INTO tiktok.archive_blobs (sha256, path, bytes, content_type, stored_at)"
                    " VALUES (:sha, :path, :bytes, :type, :now) ON CONFLICT (sha256) DO NOTHING"
                ),
                {"sha": sha256, "path": stored, "bytes": len(got.body), "type": got.content_type, "now": now},
            )
            conn.execute(
                text(
                    "INSERT INTO tiktok.cover_archive (kind, subject_id, sha256, open_id, path, bytes, content_type,"
                    " etag, archived_at, checked_at)"
                    " VALUES (:kind, :subject, :sha, :open_id, :path, :bytes, :type, :etag, :now, :now)"
                    " ON CONFLICT (kind, subject_id, sha256) DO UPDATE SET checked_at = EXCLUDED.checked_at,"
                    " etag = coalesce(EXCLUDED.etag, tiktok.cover_archive.etag)"
                ),
                {
                    "kind": item.kind,
                    "subject": item.subject_id,
                    "sha": sha256,
                    "open_id": item.open_id,
                    "path": stored,
                    "bytes": len(got.body),
                    "type": got.content_type,
                    "etag": got.etag,
                    "now": now,
                },
            )

    def archive(self, items: Iterable[CoverItem], *, now: datetime) -> ArchiveResult:
        """Archive ``items``: new content is stored and recorded; refusals are logged, never raised."""
        items = list({(i.kind, i.subject_id): i for i in items}.values())
        current = self._current(items)
        result = ArchiveResult()

        def fetch(item: CoverItem) -> tuple[CoverItem, Downloaded | None, Exception | None]:
            try:
                return item, self.download(item.url, current.get((item.kind, item.subject_id), (None, None))[1]), None
            except (Refused, Retryable) as exc:
                return item, None, exc

        # Downloads run in a few threads; the warehouse and the storage are written here, in order.
        # A bounded slice at a time, so at most a few bodies are held in memory.
        step = max(1, self.settings.workers) * 4
        with ThreadPoolExecutor(max(1, self.settings.workers), thread_name_prefix="cover-archive") as pool:
            for start in range(0, len(items), step):
                for item, got, error in pool.map(fetch, items[start : start + step]):
                    self._record(item, got, error, current, now, result)
        if result.refused or result.failed:
            log.warning(
                "Cover archive: %d of %d not archived (%d refused, %d failed)",
                len(result.refused) + len(result.failed),
                result.checked,
                len(result.refused),
                len(result.failed),
            )
        return result

    def _record(
        self,
        item: CoverItem,
        got: Downloaded | None,
        error: Exception | None,
        current: Mapping[tuple[str, str], tuple[str, str | None]],
        now: datetime,
        result: ArchiveResult,
    ) -> None:
        result.checked += 1
        known_sha = current.get((item.kind, item.subject_id), (None, None))[0]
        # Each piece of server text in a reason is escaped and cut where it is put in; this is the backstop.
        reason = escaped(str(error), MAX_REASON)
        if isinstance(error, Refused):
            result.refused.append((item.subject_id, reason))
            log.warning("Not archiving the %s of %s: %s (account %s)", item.kind, item.subject_id, reason, item.open_id)
            return
        if error is not None or got is None:
            result.failed.append((item.subject_id, reason))
            tries = getattr(error, "tries", self.settings.retries + 1)
            log.warning(
                "Could not download the %s of %s after %d %s: %s (account %s)",
                item.kind,
                item.subject_id,
                tries,
                "try" if tries == 1 else "tries",
                reason,
                item.open_id,
            )
            return
        if got.body is None:
            result.not_modified += 1
            assert known_sha is not None
            self._touch(item, known_sha, got.etag, now)
            return
        result.downloaded += 1
        result.bytes_downloaded += len(got.body)
        sha256 = hashlib.sha256(got.body).hexdigest()
        if sha256 == known_sha:
            result.unchanged += 1
            self._touch(item, sha256, got.etag, now)
            return
        self._store(item, got, sha256, now, result)
        result.new_versions += 1
