"""
Render the accounts UI's HTML: server-side, every dynamic value escaped.

Creator-controlled text (display names, usernames, status reasons quoting TikTok) and anything
from a request is data: it only reaches a page through :func:`e` (``html.escape`` with quotes), and
only into text or double-quoted attribute values. URLs we put into ``href``/``src`` are built from
fixed paths and quoted ids, or are checked to be http(s) (avatars). The follower chart is an SVG
drawn here from numbers only.

The pages work without JavaScript. The one script, :data:`FRAME_SCRIPT` (allowed by a per-response
nonce, no inline handlers), matters only inside the Airflow UI's frame: Airflow embeds plugin
views in an iframe sandboxed *without* ``allow-top-navigation``, yet TikTok's consent page and
Airflow's own pages must open in the top window, not nested in the frame. Links marked
``data-top`` (and the interstitial's ``data-navigate-top``) are therefore followed by an anchor
created in the (same-origin) parent document.
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from tiktok_accounts.oauth import SCOPE_HELP, SCOPES

if TYPE_CHECKING:
    from collections.abc import Sequence

    from tiktok_warehouse.accounts_admin import AccountHealth, FollowerPoint

CHART_RANGES = (30, 90, 365)
STATUS_LABELS = {
    "active": "active",
    "reauth_required": "reauth required",
    "disconnected": "disconnected",
    "disabled": "disabled",
    "consent_expired": "consent expired",
}

CSS = """
:root { color-scheme: light dark; --fg: #1a202c; --muted: #5a6473; --line: #d9dee5; --bg: #fff; --card: #f7f8fa;
  --ok: #1f7a3a; --bad: #b42318; --warn: #a15c00; --accent: #0b67c2; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6e9ee; --muted: #a0a9b6; --line: #3a414c; --bg: #14171c;
  --card: #1c2027; --ok: #5cc98a; --bad: #ff7b72; --warn: #e3a449; --accent: #6cb6ff; } }
body { font: 14px/1.45 system-ui, sans-serif; color: var(--fg); background: var(--bg); margin: 0; }
header { display: flex; gap: 1rem; align-items: center; padding: .6rem 1.2rem; border-bottom: 1px solid var(--line); }
header h1 { font-size: 1.15rem; margin: 0; flex: 1; } header a { color: var(--accent); }
main { padding: 1rem 1.2rem; max-width: 80rem; }
a { color: var(--accent); } .muted { color: var(--muted); } code { font-size: .9em; }
.notice { padding: .6rem .9rem; border-radius: 6px; margin-bottom: 1rem; border: 1px solid var(--line); }
.notice.ok { border-color: var(--ok); } .notice.bad { border-color: var(--bad); }
.notice.warn { border-color: var(--warn); }
.summary { margin: .2rem 0 1rem; }
.connect { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: .8rem 1rem;
  margin-bottom: 1rem; }
.connect label { margin-right: 1rem; white-space: nowrap; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(30rem, 1fr)); gap: 1rem; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: .8rem 1rem; }
.card.unhealthy { border-color: var(--bad); border-width: 2px; }
.who { display: flex; gap: .8rem; align-items: center; }
.who img, .who .noavatar { width: 48px; height: 48px; border-radius: 50%; background: var(--line); flex: none; }
.who .name { font-weight: 600; font-size: 1.05rem; overflow-wrap: anywhere; } .who .id { overflow-wrap: anywhere; }
.badge { display: inline-block; padding: 0 .5rem; border-radius: 999px; font-size: .8rem; font-weight: 600;
  border: 1px solid currentColor; }
.badge.active { color: var(--ok); } .badge.reauth_required, .badge.consent_expired { color: var(--bad); }
.badge.disconnected, .badge.disabled { color: var(--muted); }
dl { display: grid; grid-template-columns: 13rem 1fr; gap: .15rem .8rem; margin: .7rem 0; }
dt { color: var(--muted); } dd { margin: 0; overflow-wrap: anywhere; }
.soon { color: var(--warn); font-weight: 600; } .expired { color: var(--bad); font-weight: 600; }
.chart svg { display: block; max-width: 100%; } .chart polyline { fill: none; stroke: var(--accent); stroke-width: 2; }
.chart text { fill: var(--muted); font-size: 10px; } .chart line { stroke: var(--line); }
.videos h3 { font-size: 13px; margin: 8px 0 4px; } .tiles { display: flex; flex-wrap: wrap; gap: 8px; }
.video { margin: 0; width: 150px; }
.video .cover, .video .nocover { width: 96px; height: 128px; object-fit: cover; display: block; }
.video figcaption { font-size: 11px; overflow: hidden; white-space: nowrap; text-overflow: ellipsis; }
.early polyline { fill: none; stroke: var(--accent); stroke-width: 1.5; } .early circle { fill: var(--accent); }
.early text { fill: var(--muted); font-size: 8px; }
.actions { display: flex; flex-wrap: wrap; gap: .5rem; align-items: center; margin-top: .6rem; }
.actions form { display: inline-flex; gap: .4rem; align-items: center; margin: 0; }
button { font: inherit; padding: .25rem .8rem; border-radius: 5px; border: 1px solid var(--line); background: var(--bg);
  color: var(--fg); cursor: pointer; }
button.primary { background: var(--accent); color: #fff; border-color: var(--accent); }
button.danger { color: var(--bad); border-color: var(--bad); }
.ranges a { margin-right: .4rem; } .ranges a.current { font-weight: 700; text-decoration: none; color: var(--fg); }
.message { max-width: 46rem; } .message p { margin: .6rem 0; }
"""


#: Follows ``a[data-top]`` links (and ``[data-navigate-top]`` at once) in the top window when framed.
FRAME_SCRIPT = """
(function () {
  if (window.top === window) return;
  var top;
  try { top = window.top.document; } catch (error) { return; }
  function go(href) {
    var link = top.createElement("a");
    link.href = new URL(href, window.location.href).href;
    link.style.display = "none";
    top.body.appendChild(link);
    link.click();
    link.remove();
  }
  document.addEventListener("click", function (event) {
    var link = event.target.closest("a[data-top]");
    if (link) { event.preventDefault(); go(link.getAttribute("href")); }
  });
  document.addEventListener("DOMContentLoaded", function () {
    var now = document.querySelector("a[data-navigate-top]");
    if (now) go(now.getAttribute("href"));
  });
})();
"""


def e(value: Any) -> str:
    """Escape a value for HTML text or a double-quoted attribute."""
    return html.escape("" if value is None else str(value), quote=True)


def when(value: datetime | None, now: datetime) -> str:
    """``2026-03-02 09:30 UTC (in 5 d)``, escaped."""
    if value is None:
        return '<span class="muted">never</span>'
    delta = value - now
    seconds = abs(delta.total_seconds())
    if seconds < 3600:
        amount = f"{int(seconds // 60)} min"
    elif seconds < 2 * 86400:
        amount = f"{int(seconds // 3600)} h"
    else:  # whole days, rounded up ahead (as the consent's "days left"), down behind
        amount = f"{math.ceil(seconds / 86400) if delta.total_seconds() > 0 else int(seconds // 86400)} d"
    relative = f"in {amount}" if delta.total_seconds() > 0 else f"{amount} ago"
    return f"{e(value.astimezone(UTC).strftime('%Y-%m-%d %H:%M'))} UTC <span class='muted'>({e(relative)})</span>"


def safe_image_url(url: str | None) -> str | None:
    """An http(s) URL fit for ``<img src>``, or None."""
    if not url:
        return None
    parts = urlsplit(url)
    return url if parts.scheme in ("http", "https") and parts.netloc else None


# -- chart ------------------------------------------------------------------------------------------


def follower_chart(points: Sequence[FollowerPoint], *, days: int, now: datetime) -> str:
    """An inline SVG line of followers over the last ``days`` days (numbers only, nothing to escape)."""
    if len(points) < 2:
        have = f"{len(points)} in the last {days} days"
        return f'<p class="muted">Not enough profile snapshots for a chart yet ({have}).</p>'
    width, height, pad_x, pad_y = 420, 110, 46, 14
    start = now.date() - timedelta(days=days)
    span_days = max(days, 1)
    lo = min(p.followers for p in points)
    hi = max(p.followers for p in points)
    spread = max(hi - lo, 1)

    def x(day: Any) -> float:
        return pad_x + (width - pad_x - 6) * ((day - start).days / span_days)

    def y(count: int) -> float:
        return height - pad_y - (height - 2 * pad_y) * ((count - lo) / spread)

    line = " ".join(f"{x(p.day):.1f},{y(p.followers):.1f}" for p in points)
    return (
        f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="Followers over the last {days} days">'
        f'<line x1="{pad_x}" y1="{height - pad_y}" x2="{width - 6}" y2="{height - pad_y}"/>'
        f'<text x="2" y="{pad_y + 4}">{hi:,}</text><text x="2" y="{height - pad_y}">{lo:,}</text>'
        f'<text x="{pad_x}" y="{height - 1}">{start.isoformat()}</text>'
        f'<text x="{width - 70}" y="{height - 1}">{now.date().isoformat()}</text>'
        f'<polyline points="{line}"/></svg>'
    )


#: The marks of the early-views curve, in order (``tiktok.video_early_metrics``; 28d left out).
EARLY_MARKS = ("1h", "6h", "24h", "7d")


@dataclass(frozen=True)
class VideoTile:
    """One of an account's latest videos: its archived cover (by content hash) and its early views."""

    video_id: str
    title: str | None
    cover_sha256: str | None
    #: mark -> views at that mark, for the marks with an observation.
    early_views: dict[str, int] = field(default_factory=dict)


def early_curve(views: dict[str, int]) -> str:
    """A small inline SVG of views at 1h/6h/24h/7d (numbers only, nothing to escape)."""
    points = [(i, views[m]) for i, m in enumerate(EARLY_MARKS) if isinstance(views.get(m), int)]
    if not points:
        return '<span class="muted nocurve">no early views yet</span>'
    width, height, pad = 150, 44, 6
    hi = max(max(v for _, v in points), 1)

    def x(i: int) -> float:
        return pad + (width - 2 * pad) * i / (len(EARLY_MARKS) - 1)

    def y(v: int) -> float:
        return height - 12 - (height - 18) * v / hi

    line = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in points)
    dots = "".join(f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="2"/>' for i, v in points)
    labels = "".join(f'<text x="{x(i) - 5:.1f}" y="{height - 1}">{m}</text>' for i, m in enumerate(EARLY_MARKS))
    return (
        f'<svg class="early" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="Views at 1 h, 6 h, 24 h and 7 d after posting">'
        f'<polyline points="{line}"/>{dots}{labels}</svg>'
    )


def _videos(ctx: PageContext, tiles: Sequence[VideoTile]) -> str:
    if not tiles:
        return ""
    items = []
    for tile in tiles:
        sha = tile.cover_sha256 if tile.cover_sha256 and _SHA256.fullmatch(tile.cover_sha256) else None
        cover = (
            f'<img class="cover" src="{e(ctx.root)}/covers/{sha}" alt="" loading="lazy" width="96" height="128">'
            if sha
            else '<div class="nocover muted">not archived yet</div>'
        )
        title = e((tile.title or "")[:80]) or '<span class="muted">(no title)</span>'
        items.append(
            f'<figure class="video" data-video-id="{e(tile.video_id)}">{cover}'
            f"<figcaption>{title}</figcaption>{early_curve(tile.early_views)}</figure>"
        )
    return f'<div class="videos"><h3>Latest videos</h3><div class="tiles">{"".join(items)}</div></div>'


_SHA256 = re.compile(r"[0-9a-f]{64}")


# -- pages ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskLink:
    """The account's latest task instance (or queued run) of one DAG."""

    label: str
    state: str | None
    url: str


@dataclass(frozen=True)
class AccountView:
    health: AccountHealth
    effective_status: str
    consent_days_left: int
    consent_warning: int | None
    chart: str
    growth: int | None
    links: list[TaskLink] = field(default_factory=list)
    videos: list[VideoTile] = field(default_factory=list)

    @property
    def unhealthy(self) -> bool:
        return self.effective_status in ("reauth_required", "consent_expired") or (
            self.effective_status == "active" and self.consent_warning is not None
        )


@dataclass(frozen=True)
class PageContext:
    """What every page needs: where things are, who is looking, what they may do."""

    root: str  # this app's path, e.g. /tiktok-accounts
    ui: str  # the Airflow UI's path, e.g. "" or /airflow
    user_name: str
    nonce: str
    now: datetime
    csrf: str = ""
    can_manage: bool = False
    can_connect: bool = False

    @property
    def embedded(self) -> str:
        """The accounts page inside the Airflow UI (its plugin view)."""
        return f"{self.ui}/plugin/{VIEW_ROUTE}{self.root[len(self.ui) :]}/"


VIEW_ROUTE = "tiktok-accounts"


def layout(ctx: PageContext, title: str, body: str) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)}</title><style nonce="{e(ctx.nonce)}">{CSS}</style>
<script nonce="{e(ctx.nonce)}">{FRAME_SCRIPT}</script></head>
<body><header><h1>{e(title)}</h1><a href="{e(ctx.embedded)}" data-top>TikTok accounts</a>
<a href="{e(ctx.ui)}/dags?tags=tiktok" data-top>TikTok DAGs</a><a href="{e(ctx.ui)}/" data-top>Airflow</a>
<span class="muted">{e(ctx.user_name)}</span></header><main>{body}</main></body></html>"""


def leave_for(ctx: PageContext, url: str, what: str) -> str:
    """An interstitial that sends the top window to ``url`` (TikTok's consent page) when framed."""
    body = f"""<div class="message"><p>Opening {e(what)}&hellip;</p>
<p><a href="{e(url)}" data-navigate-top data-top>Continue to {e(what)}</a></p></div>"""
    return layout(ctx, "TikTok accounts", body)


def message_page(ctx: PageContext, title: str, paragraphs: Sequence[str], *, kind: str = "bad", extra: str = "") -> str:
    """A page that says what happened and what to do next; ``paragraphs`` are plain text, ``extra`` markup."""
    text = "".join(f"<p>{e(p)}</p>" for p in paragraphs)
    body = f"""<div class="message"><div class="notice {e(kind)}">{text}</div>{extra}
<p><a href="{e(ctx.embedded)}" data-top>Back to the TikTok accounts</a></p></div>"""
    return layout(ctx, title, body)


def _hidden_csrf(ctx: PageContext) -> str:
    return f'<input type="hidden" name="csrf_token" value="{e(ctx.csrf)}">'


def _connect_form(ctx: PageContext, redirect_uri: str, authorize_host: str) -> str:
    if not ctx.can_connect:
        return (
            '<p class="muted">Connecting accounts needs the right to edit the <code>tiktok_default</code> '
            "connection and to trigger the TikTok DAGs.</p>"
        )
    boxes = "".join(
        f'<label><input type="checkbox" name="scope" value="{e(scope)}" checked'
        f"{' disabled' if scope == 'user.info.basic' else ''}> <code>{e(scope)}</code> "
        f'<span class="muted">{e(SCOPE_HELP.get(scope, ""))}</span></label>'
        for scope in SCOPES
    )
    return f"""<form class="connect" method="post" action="{e(ctx.root)}/connect">{_hidden_csrf(ctx)}
<strong>Connect an account</strong> <span class="muted">&mdash; the creator approves on TikTok
({e(authorize_host)}), then comes back here.</span><p>{boxes}</p>
<button class="primary" type="submit">Connect account</button>
<span class="muted">Redirect URI (register it with TikTok): <code>{e(redirect_uri)}</code></span></form>"""


def _status(view: AccountView) -> str:
    health = view.health
    label = STATUS_LABELS.get(view.effective_status, view.effective_status)
    reason = f' <span class="muted">{e(health.status_reason)}</span>' if health.status_reason else ""
    return f'<span class="badge {e(view.effective_status)}">{e(label)}</span>{reason}'


def _consent(view: AccountView, now: datetime) -> str:
    expiry = when(view.health.refresh_expires_at, now)
    if view.health.refresh_expiry_estimated:
        # TikTok did not state the lifetime: the date is our estimate, and only TikTok can condemn it.
        expiry += ' <span class="muted">(estimated: TikTok did not state it)</span>'
        if view.effective_status == "active" and view.consent_days_left == 0:
            return (
                f'<span class="soon">{expiry} &mdash; passed; the next refresh asks TikTok, and the account '
                "is marked only if TikTok refuses it</span>"
            )
    if view.effective_status == "consent_expired" or view.consent_days_left == 0:
        return f'<span class="expired">{expiry} &mdash; ran out: reconnect the account</span>'
    if view.consent_warning is not None:
        return (
            f'<span class="soon">{expiry} &mdash; {view.consent_days_left} day(s) left '
            f"({view.consent_warning}-day warning): reconnect before then</span>"
        )
    return expiry


def _card(ctx: PageContext, view: AccountView, days: int) -> str:
    h = view.health
    avatar = safe_image_url(h.avatar_url)
    picture = (
        f'<img src="{e(avatar)}" alt="" referrerpolicy="no-referrer" loading="lazy">'
        if avatar
        else '<div class="noavatar"></div>'
    )
    username = f' <span class="muted">@{e(h.username)}</span>' if h.username else ""
    account_path = f"{ctx.root}/accounts/{quote(h.open_id, safe='')}"
    followers = "unknown" if h.followers is None else f"{h.followers:,}"
    if view.growth is not None:
        followers += f' <span class="muted">({view.growth:+,} in {days} d)</span>'
    links = (
        " · ".join(
            f'<a href="{e(link.url)}" data-top>{e(link.label)}</a>: {e(link.state or "no status yet")}'
            for link in view.links
        )
        or '<span class="muted">no runs yet</span>'
    )
    actions = []
    if ctx.can_connect and (view.effective_status != "active" or view.consent_warning is not None):
        actions.append(
            f'<form method="post" action="{e(ctx.root)}/connect">{_hidden_csrf(ctx)}'
            f'<input type="hidden" name="open_id" value="{e(h.open_id)}">'
            + "".join(f'<input type="hidden" name="scope" value="{e(s)}">' for s in sorted(h.scopes))
            + '<button class="primary" type="submit">Reconnect</button></form>'
        )
    if ctx.can_manage and h.status != "disconnected":
        actions.append(
            f'<form method="post" action="{e(account_path)}/disconnect">{_hidden_csrf(ctx)}'
            '<button class="danger" type="submit">Disconnect</button>'
            '<span class="muted">revokes its token at TikTok</span></form>'
        )
    if ctx.can_manage and h.status == "disconnected":
        actions.append(
            f'<form method="post" action="{e(account_path)}/purge">{_hidden_csrf(ctx)}'
            f'<input name="confirm" required placeholder="type {e(h.open_id)} to confirm" '
            f'aria-label="Type the open_id to confirm the purge" size="28">'
            '<button class="danger" type="submit">Purge</button>'
            '<span class="muted">deletes every row of this account</span></form>'
        )
    return f"""<section class="card{" unhealthy" if view.unhealthy else ""}" id="account-{e(h.open_id)}"
 data-open-id="{e(h.open_id)}"><div class="who">{picture}<div><div class="name">{e(h.name)}{username}</div>
<div class="id muted"><code>{e(h.open_id)}</code></div></div></div>
<dl><dt>Status</dt><dd>{_status(view)}</dd>
<dt>Scopes</dt><dd>{e(", ".join(sorted(h.scopes)) or "none")}</dd>
<dt>Access token expires</dt><dd>{when(h.access_expires_at, ctx.now)}</dd>
<dt>Consent (refresh token) expires</dt><dd>{_consent(view, ctx.now)}</dd>
<dt>Last profile snapshot</dt><dd>{when(h.last_snapshot_at, ctx.now)}</dd>
<dt>Last successful video sync</dt><dd>{when(h.last_video_sync_at, ctx.now)}</dd>
<dt>Videos stored</dt><dd>{h.videos_stored:,}</dd>
<dt>Covers stale now</dt><dd>{h.covers_stale:,}</dd>
<dt>Followers</dt><dd>{followers}</dd>
<dt>Latest tasks</dt><dd>{links}</dd></dl>
<div class="chart">{view.chart}</div>{_videos(ctx, view.videos)}
<div class="actions">{"".join(actions)}</div></section>"""


def accounts_page(
    ctx: PageContext,
    views: Sequence[AccountView],
    *,
    days: int,
    redirect_uri: str,
    authorize_host: str,
    notice: tuple[str, str] | None = None,
) -> str:
    """The accounts page: the connect form, then one card per account, those needing a person first."""
    counts: dict[str, int] = {}
    for view in views:
        counts[view.effective_status] = counts.get(view.effective_status, 0) + 1
    unhealthy = sum(1 for v in views if v.unhealthy)
    summary = ", ".join(f"{n} {STATUS_LABELS.get(s, s)}" for s, n in sorted(counts.items())) or "none yet"
    attention = f' &mdash; <strong class="expired">{unhealthy} need(s) attention</strong>' if unhealthy else ""
    current = ' class="current"'
    ranges = " ".join(
        f'<a href="{e(ctx.root)}/?days={r}"{current if r == days else ""}>{r} d</a>' for r in CHART_RANGES
    )
    banner = f'<div class="notice {e(notice[0])}" role="status">{e(notice[1])}</div>' if notice else ""
    cards = "".join(_card(ctx, view, days) for view in views) or '<p class="muted">No account is connected yet.</p>'
    body = f"""{banner}{_connect_form(ctx, redirect_uri, authorize_host)}
<p class="summary">{len(views)} account(s): {e(summary)}{attention}. <span class="ranges">Follower chart:
{ranges}</span></p><div class="cards">{cards}</div>"""
    return layout(ctx, "TikTok accounts", body)
