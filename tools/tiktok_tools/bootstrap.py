"""``make bootstrap``: the production bootstrap (:mod:`tiktok_ops.bootstrap`) on any machine.

With no ``TIKTOK_PG_SERVER`` and nothing answering on 127.0.0.1:5432 (``TIKTOK_PG_PROBE``), it first
starts the embedded PostgreSQL server of :mod:`tiktok_tools.pgserver` (``make down`` stops it); the
settings then find that server by its files. Production (docker-compose's ``airflow-init``) runs
``python -m tiktok_ops.bootstrap`` itself and never reaches this module.
"""

from __future__ import annotations

import sys

from tiktok_ops import bootstrap
from tiktok_ops import settings as local_settings
from tiktok_tools import pgserver


def main(argv: list[str] | None = None) -> None:
    home = local_settings.Settings.from_env().airflow_home
    try:
        pgserver.ensure(home)
    except pgserver.EmbeddedPostgresError as exc:
        raise SystemExit(f"bootstrap: {exc}") from None
    bootstrap.main(sys.argv[1:] if argv is None else argv, prog="python -m tiktok_tools.bootstrap")


if __name__ == "__main__":
    main()
