"""The provider's hook wired to the warehouse: the token store the pipeline's tasks pass in, and the warehouse.

The provider builds no store of its own; every task that calls TikTok gets its hook from
:func:`display_hook`, so each uses the warehouse named by the TikTok connection's
``warehouse_conn_id`` extra, with the connection's encryption key.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from tiktok_pipeline.names import TIKTOK_CONN_ID

if TYPE_CHECKING:
    from collections.abc import Callable

    from tiktok_provider.connection import TikTokConnectionConfig
    from tiktok_provider.hooks.tiktok import TikTokDisplayHook
    from tiktok_warehouse.loads import Warehouse
    from tiktok_warehouse.tokens import TokenStore


def quiet_transport_loggers() -> None:
    """Keep urllib3's per-request DEBUG lines (every URL, every retry) out of task logs.

    Applied by :func:`display_hook`, i.e. when a task builds a hook, never on import.
    """
    logging.getLogger("urllib3").setLevel(logging.WARNING)


#: Engines shared by every hook and warehouse built inside :func:`shared_engines` (a batch task).
_shared: dict[str, Any] | None = None


@contextmanager
def shared_engines() -> Iterator[None]:
    """Within it, one engine per warehouse connection for every hook and warehouse built; disposed at the end.

    A batch task builds a hook per account: without this, each would open engines (and pooled
    connections) of its own, and a batch of 50 would hold hundreds of Postgres connections.
    """
    global _shared
    outer, _shared = _shared, ({} if _shared is None else _shared)
    try:
        yield
    finally:
        if outer is None:
            for engine in (_shared or {}).values():
                engine.dispose()
        _shared = outer


def _engine(conn_id: str) -> Any:
    from tiktok_warehouse.db import get_engine

    if _shared is None:
        return get_engine(conn_id)
    if conn_id not in _shared:
        _shared[conn_id] = get_engine(conn_id)
    return _shared[conn_id]


def warehouse_token_store(config: TikTokConnectionConfig, *, tiktok_conn_id: str = TIKTOK_CONN_ID) -> TokenStore:
    """The warehouse's token store for a TikTok connection: its warehouse, its encryption key."""
    from tiktok_warehouse.tokens import TokenStore

    return TokenStore(_engine(config.warehouse_conn_id), config.token_encryption_key, key_conn_id=tiktok_conn_id)


def display_hook(
    tiktok_conn_id: str = TIKTOK_CONN_ID,
    *,
    sleep: Callable[[float], None] | None = None,
    priority: str = "normal",
) -> TikTokDisplayHook:
    """The hook for ``tiktok_conn_id``, its tokens in the warehouse the connection names.

    :param priority: its share of the cluster's rate budget (``interactive``, ``normal``, ``bulk``).
    """
    from tiktok_provider.hooks.tiktok import TikTokDisplayHook

    quiet_transport_loggers()
    extra = {"sleep": sleep} if sleep is not None else {}
    return TikTokDisplayHook(
        tiktok_conn_id,
        token_store_factory=lambda config: warehouse_token_store(config, tiktok_conn_id=tiktok_conn_id),
        priority=priority,
        **extra,
    )


def warehouse_of(hook: TikTokDisplayHook) -> Warehouse:
    """The warehouse the hook's connection names (where its tasks' loads go), with the removal policy.

    ``[tiktok] early_history_days`` is read here, once per task: the loads keep every capture of
    videos that young (:mod:`tiktok_warehouse.history`).
    """
    from tiktok_pipeline.removals import POLICY
    from tiktok_warehouse.history import young_days_setting
    from tiktok_warehouse.loads import Warehouse

    return Warehouse(_engine(hook.config.warehouse_conn_id), removals=POLICY, young_days=young_days_setting())
