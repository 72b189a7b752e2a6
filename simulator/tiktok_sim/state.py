"""Tie one simulator's parts together: settings, clock, accounts, tokens, limiter, faults, stats.

All mutable state lives on one :class:`Simulator` and is guarded by ``Simulator.lock``; request
handlers take the lock for the short, CPU-only part of their work (never while sleeping).
"""

from __future__ import annotations

import random
import secrets
import threading

from tiktok_sim.accounts import AccountStore
from tiktok_sim.clock import SimClock
from tiktok_sim.config import SimConfig
from tiktok_sim.covers import UrlSigner
from tiktok_sim.envelope import new_log_id
from tiktok_sim.faults import FaultInjector
from tiktok_sim.oauth import TokenStore
from tiktok_sim.ratelimit import SlidingWindowLimiter
from tiktok_sim.stats import Stats


class Simulator:
    """The whole in-memory state of one simulated TikTok."""

    def __init__(self, config: SimConfig) -> None:
        if config.client_secret is None:
            config.client_secret = secrets.token_urlsafe(32)
        self.config = config
        self.lock = threading.RLock()
        self.clock = SimClock(start=config.start_time, frozen=config.freeze_clock)
        self.accounts = AccountStore(config.seed, config.epoch)
        self.tokens = TokenStore()
        self.limiter = SlidingWindowLimiter()
        self.faults = FaultInjector(config.seed)
        self.page_rng = random.Random(f"tiktok-sim:{config.seed}:pages")
        self.stats = Stats(config.log_size)
        self.signer = UrlSigner()
        #: Cover versions changed through the admin API (``cover/<video_id>``, ``avatar/<open_id>``); 0 if absent.
        self.cover_versions: dict[str, int] = {}
        for index in range(config.accounts):
            self.accounts.create(config.videos // (index + 1))

    @property
    def client_secret(self) -> str:
        assert self.config.client_secret is not None
        return self.config.client_secret

    def now(self) -> float:
        return self.clock.now()

    def log_id(self) -> str:
        return new_log_id(self.clock.now())

    def cdn_url(self, base_url: str, kind: str, obj: str) -> str:
        """Return a signed CDN URL for ``obj`` valid for ``cover_ttl`` from now."""
        expires = int(self.clock.now()) + self.config.cover_ttl
        return self.signer.url(base_url, kind, obj, expires)
