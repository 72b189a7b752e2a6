"""Every name the pipeline and its DAGs share: connection ids, the pool, Variable prefixes, DAG ids.

The one place they are defined; DAG files, the accounts page and the tools import them from here.
(The provider's hook and the warehouse keep their own defaults, which these equal: a unit test says so.)
"""

from __future__ import annotations

#: The TikTok app's connection of every DAG; its extra names the warehouse (``warehouse_conn_id``).
TIKTOK_CONN_ID = "tiktok_default"
#: The warehouse's Postgres connection, unless the TikTok connection's extra names another.
WAREHOUSE_CONN_ID = "tiktok_warehouse"
#: The pool that caps concurrent TikTok API tasks (``make bootstrap`` creates it).
API_POOL = "tiktok_api"
#: The only Variables the connect DAG reads a refresh token from (``<prefix><name>``).
REFRESH_TOKEN_VARIABLE_PREFIX = "tiktok_refresh_token_"

CONNECT_DAG_ID = "tiktok_connect_account"
PROFILE_DAG_ID = "tiktok_profile_snapshot"
BACKFILL_DAG_ID = "tiktok_video_backfill"
COVER_DAG_ID = "tiktok_cover_refresh"
#: The run id prefix of the runs the accounts page starts for a newly connected account: their
#: tasks call TikTok at the ``interactive`` priority (:func:`tiktok_pipeline.operators.run_priority`).
FIRST_RUN_ID_PREFIX = "connect__"
