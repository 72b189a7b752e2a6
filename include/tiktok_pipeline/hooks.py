"""The provider's hook wired to the warehouse: the token store the pipeline's tasks pass in, and the warehouse.

The provider builds no store of its own; every task that calls TikTok gets its hook from
:func:`display_hook`, so each uses the warehouse named by the TikTok connection's
``warehouse_conn_id`` extra, with the connection's encryption key.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

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


def warehouse_token_store(config: TikTokConnectionConfig, *, tiktok_conn_id: str = TIKTOK_CONN_ID) -> TokenStore:
    """The warehouse's token store for a TikTok connection: its warehouse, its encryption key."""
    from tiktok_warehouse.db import get_engine
    from tiktok_warehouse.tokens import TokenStore

    return TokenStore(get_engine(config.warehouse_conn_id), config.token_encryption_key, key_conn_id=tiktok_conn_id)


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
    from tiktok_warehouse.db import get_engine
    from tiktok_warehouse.history import young_days_setting
    from tiktok_warehouse.loads import Warehouse

    return Warehouse(get_engine(hook.config.warehouse_conn_id), removals=POLICY, young_days=young_days_setting())
