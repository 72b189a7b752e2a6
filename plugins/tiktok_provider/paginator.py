"""Walking the video endpoints: ``video/list`` page by page with its guards, ``video/query`` 20 ids a call.

The guards live here, once: parameters checked before sending, videos repeated across a page
boundary dropped, a cursor that does not move back in time and ``has_more`` over too many empty
pages both end the walk with :class:`~tiktok_provider.errors.TikTokMalformedResponse`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any, Protocol

from tiktok_provider import errors
from tiktok_provider.fields import INT64_MAX, VIDEO_FIELDS
from tiktok_provider.responses import VIDEO_ID, Envelope, Issues, VideoPage, parse_video_page, parse_video_query

VIDEO_LIST = "/v2/video/list/"
VIDEO_QUERY = "/v2/video/query/"
QUERY_BATCH = 20
PAGE_SIZE = 20


class CallApi(Protocol):
    def __call__(
        self, method: str, path: str, *, open_id: str, fields: Sequence[str], body: dict | None = None
    ) -> Envelope: ...


def log_issues(log: Any, issues: Issues, before: int, endpoint: str, open_id: str, log_id: str | None) -> None:
    """Log each value sanitised since ``before`` (one warning per value)."""
    for text in issues.items[before:]:
        log.warning("Sanitised answer of %s for account %s [log_id=%s]: %s", endpoint, open_id, log_id, text)


def iter_video_pages(
    call_api: CallApi,
    check_fields: Callable[..., None],
    open_id: str,
    *,
    issues: Issues,
    log: Any,
    cursor: int | None = None,
    max_count: int = PAGE_SIZE,
    fields: Sequence[str] = VIDEO_FIELDS,
    max_empty_pages: int = 50,
) -> Iterator[VideoPage]:
    """Yield the account's videos page by page, newest first, from ``cursor`` (ms) if given.

    Videos repeated across a page boundary are dropped; a cursor that does not move back in
    time, or ``has_more`` staying true over ``max_empty_pages`` empty pages, ends the listing
    with :class:`TikTokMalformedResponse` instead of looping.
    """
    if not 1 <= max_count <= 20:
        raise errors.TikTokInvalidParams(
            f"max_count must be 1..20, got {max_count}", endpoint=VIDEO_LIST, open_id=open_id
        )
    if cursor is not None and (type(cursor) is not int or not 0 <= cursor <= INT64_MAX):
        raise errors.TikTokInvalidParams(
            f"cursor must be a Unix time in milliseconds, got {str(cursor)[:40]!r}",
            endpoint=VIDEO_LIST,
            open_id=open_id,
        )
    fields = list(dict.fromkeys(["id", "create_time", *fields]))
    check_fields(open_id, VIDEO_LIST, fields, kind="video")
    previous_ids: set[str] = set()
    empty_run = 0
    while True:
        body: dict[str, Any] = {"max_count": max_count}
        if cursor is not None:
            body["cursor"] = cursor
        env = call_api("POST", VIDEO_LIST, open_id=open_id, fields=fields, body=body)
        before = len(issues)
        page = parse_video_page(env, fields, endpoint=VIDEO_LIST, open_id=open_id, issues=issues)
        log_issues(log, issues, before, VIDEO_LIST, open_id, env.log_id)
        page_ids: set[str] = set()
        unique = []
        for video in page.videos:
            if video["id"] in previous_ids or video["id"] in page_ids:
                continue
            page_ids.add(video["id"])
            unique.append(video)
        ctx = {
            "endpoint": VIDEO_LIST,
            "open_id": open_id,
            "http_status": env.http_status,
            "log_id": env.log_id,
        }
        if page.has_more and cursor is not None and page.cursor is not None and page.cursor >= cursor:
            raise errors.TikTokMalformedResponse(
                f"cursor did not advance ({cursor} -> {page.cursor}); stopping instead of looping. "
                f"Pages up to cursor {cursor} are stored",
                **ctx,
            )
        empty_run = empty_run + 1 if not page.videos else 0
        if page.has_more and empty_run > max_empty_pages:
            raise errors.TikTokMalformedResponse(
                f"has_more stayed true over {empty_run} empty pages; stopping at cursor {page.cursor}",
                **ctx,
            )
        yield replace(page, videos=unique)
        if not page.has_more:
            return
        previous_ids = page_ids or previous_ids
        cursor = page.cursor


def query_videos(
    call_api: CallApi,
    check_fields: Callable[..., None],
    open_id: str,
    video_ids: Sequence[str],
    *,
    issues: Issues,
    log: Any,
    fields: Sequence[str] = VIDEO_FIELDS,
) -> Iterator[tuple[list[str], list[dict[str, Any]]]]:
    """Yield ``(requested_ids, videos)`` per ``video/query`` call of at most 20 ids.

    Ids TikTok leaves out of an answer (deleted, private, another owner's) are simply absent.
    When an answer holds videos without a usable id, it does not show which requested ids are
    missing: ``requested_ids`` is then narrowed to the ids that did come back.
    """
    bad = [v for v in video_ids if not isinstance(v, str) or not VIDEO_ID.fullmatch(v)]
    if bad:
        raise errors.TikTokInvalidParams(
            f"video ids must be numeric strings; got {bad[:3]!r}", endpoint=VIDEO_QUERY, open_id=open_id
        )
    fields = list(dict.fromkeys(["id", *fields]))
    check_fields(open_id, VIDEO_QUERY, fields, kind="video")
    ids = list(dict.fromkeys(video_ids))
    for start in range(0, len(ids), QUERY_BATCH):
        batch = ids[start : start + QUERY_BATCH]
        env = call_api("POST", VIDEO_QUERY, open_id=open_id, fields=fields, body={"filters": {"video_ids": batch}})
        before = len(issues)
        answer = parse_video_query(env, fields, requested=batch, endpoint=VIDEO_QUERY, open_id=open_id, issues=issues)
        videos = answer.videos
        log_issues(log, issues, before, VIDEO_QUERY, open_id, env.log_id)
        if answer.skipped:
            log.warning(
                "%d videos of %s came back without a usable id [log_id=%s]; the %d requested videos "
                "missing from the answer are not taken for removed",
                answer.skipped,
                open_id,
                env.log_id,
                len(batch) - len(videos),
            )
            batch = [v["id"] for v in videos]
        yield batch, videos
