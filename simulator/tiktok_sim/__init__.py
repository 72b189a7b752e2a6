"""A faithful TikTok Display API v2 simulator served over real HTTP.

The real API cannot be reached from our machines, so the hook, the DAGs, the demo and every test
talk to this simulator instead.  It reproduces the documented contract
(``shared/spec/tiktok-display-api.openapi.yaml``) and the behaviour beyond it collected in
``shared/spec/tiktok-api-facts.md``: the ``error`` envelope on every response, per-field scopes,
millisecond cursors, 6-hour signed cover URLs, sliding-window rate limits, rotating refresh tokens
and OAuth errors in their own shape.

Start it with ``python -m tiktok_sim --port 8765`` (see :mod:`tiktok_sim.cli`), or from tests with
:func:`tiktok_sim.testing.running_simulator`.  Module map:

- :mod:`tiktok_sim.config` -- every setting, its CLI flag and ``TIKTOK_SIM_*`` variable
- :mod:`tiktok_sim.clock` -- the simulated clock all expiries use
- :mod:`tiktok_sim.population` -- deterministic accounts, videos and their growing counts
- :mod:`tiktok_sim.accounts` -- the mutable account registry (added, deleted, private videos)
- :mod:`tiktok_sim.fields` -- field names, their scopes and how each is rendered
- :mod:`tiktok_sim.pagination` -- the ``video/list`` cursor rule and page imperfections
- :mod:`tiktok_sim.covers` -- signed, expiring CDN URLs and the JPEG they serve
- :mod:`tiktok_sim.oauth` -- authorization codes, access and refresh tokens
- :mod:`tiktok_sim.ratelimit` -- the sliding-window limiter
- :mod:`tiktok_sim.faults` -- injected failures and bad data
- :mod:`tiktok_sim.stats` -- request counters and the request log
- :mod:`tiktok_sim.envelope` -- log ids and response bodies
- :mod:`tiktok_sim.state` -- the :class:`~tiktok_sim.state.Simulator` tying it together
- :mod:`tiktok_sim.display` / :mod:`tiktok_sim.oauth_endpoints` -- request handling
- :mod:`tiktok_sim.admin` -- the ``/_sim/`` admin API
- :mod:`tiktok_sim.app` -- the FastAPI application
- :mod:`tiktok_sim.cli` -- ``python -m tiktok_sim``
- :mod:`tiktok_sim.testing` -- start a simulator subprocess and drive it from tests
"""

from __future__ import annotations

DISPLAY_ENDPOINTS: tuple[str, ...] = ("user_info", "video_list", "video_query")
OAUTH_ENDPOINTS: tuple[str, ...] = ("oauth_token", "oauth_revoke")
#: The CDN serving covers and avatars: faults only (its requests are counted as cdn_cover / cdn_avatar).
CDN_ENDPOINTS: tuple[str, ...] = ("cdn",)
ENDPOINTS: tuple[str, ...] = DISPLAY_ENDPOINTS + OAUTH_ENDPOINTS + CDN_ENDPOINTS

__all__ = ["CDN_ENDPOINTS", "DISPLAY_ENDPOINTS", "ENDPOINTS", "OAUTH_ENDPOINTS"]
