"""Warehouse tests run against the real Postgres, in a database created (and dropped) for the session."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg2
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine

from tiktok_pipeline.removals import POLICY
from tiktok_warehouse import migrate
from tiktok_warehouse.loads import Warehouse
from tiktok_warehouse.tokens import TokenGrant, TokenStore

#: A Postgres server where the test role may CREATE DATABASE.
SERVER = os.environ.get("TIKTOK_WAREHOUSE_TEST_SERVER", "postgresql://postgres@127.0.0.1:5432")
#: A fixed, recent time: loads compare capture times, so tests use their own clock.
T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


@contextmanager
def scratch_database(prefix: str) -> Iterator[str]:
    """Create an empty database; yield its SQLAlchemy (psycopg2) URL; drop it afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(f"{SERVER}/postgres")
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE \"{name}\" ENCODING 'UTF8' TEMPLATE template0")
        yield f"{SERVER.replace('postgresql://', 'postgresql+psycopg2://', 1)}/{name}"
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(scope="session")
def wh_url() -> Iterator[str]:
    """A fresh warehouse database for the session, migrated with ``tiktok_warehouse.migrate --url``."""
    with scratch_database("tiktok_wh_test") as url:
        assert migrate.main(["upgrade", "--url", url]) == 0
        yield url


@pytest.fixture(scope="session")
def wh_engine(wh_url: str) -> Iterator[Engine]:
    engine = create_engine(wh_url, pool_size=10, max_overflow=10)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def wh_engine_psycopg3(wh_url: str) -> Iterator[Engine]:
    """The driver PostgresHook picks in production (psycopg 3), on the same database."""
    engine = create_engine(wh_url.replace("+psycopg2", "+psycopg", 1))
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def fernet_key() -> str:
    return Fernet.generate_key().decode()


@pytest.fixture
def store(wh_engine: Engine, fernet_key: str) -> TokenStore:
    return TokenStore(wh_engine, fernet_key)


@pytest.fixture
def warehouse(wh_engine: Engine) -> Warehouse:
    return Warehouse(wh_engine, removals=POLICY)


def grant(
    open_id: str,
    *,
    access_token: str | None = None,
    refresh_token: str | None = None,
    expires_in: int = 7200,
    refresh_expires_in: int = 180 * 86400,
    scopes: frozenset[str] = frozenset({"user.info.basic", "video.list"}),
    obtained_at: datetime | None = None,
) -> TokenGrant:
    """A TokenGrant with unique, recognisable token values."""
    return TokenGrant(
        open_id=open_id,
        access_token=access_token or f"act.{uuid.uuid4().hex}{uuid.uuid4().hex}",
        expires_in=expires_in,
        refresh_token=refresh_token or f"rft.{uuid.uuid4().hex}{uuid.uuid4().hex}",
        refresh_expires_in=refresh_expires_in,
        scopes=scopes,
        obtained_at=obtained_at or datetime.now(UTC),
    )


@pytest.fixture
def make_grant() -> Callable[..., TokenGrant]:
    return grant


@pytest.fixture
def new_account(store: TokenStore) -> Callable[..., str]:
    """Connect a new account with unique open_id; return the open_id."""

    def connect(**kwargs: Any) -> str:
        open_id = f"open-{uuid.uuid4().hex}"
        store.save_grant(grant(open_id), **kwargs)
        return open_id

    return connect


@pytest.fixture
def account(new_account: Callable[..., str]) -> str:
    return new_account(display_name="Creator", username="creator")


@pytest.fixture
def make_video() -> Callable[..., dict[str, Any]]:
    """Return video objects shaped like the API's; ids are unique to the test."""
    prefix = f"{uuid.uuid4().int % 10**12:012d}"

    def video(i: int, **overrides: Any) -> dict[str, Any]:
        video_id = f"7{prefix}{i:06d}"
        expires = int((T0 + timedelta(hours=6)).timestamp())
        data: dict[str, Any] = {
            "id": video_id,
            "create_time": int(T0.timestamp()) - 86_400 * i,  # video i was posted i days before T0
            "title": f"Video {i} 🎉",
            "video_description": f"Description of video {i} #fyp",
            "duration": 30 + i,
            "height": 1920,
            "width": 1080,
            "share_url": f"https://www.tiktok.com/@creator/video/{video_id}",
            "embed_link": f"https://www.tiktok.com/embed/v2/{video_id}",
            "embed_html": f'<blockquote class="tiktok-embed" data-video-id="{video_id}"></blockquote>',
            "cover_image_url": f"https://p16-sign.tiktokcdn.com/obj/{video_id}.jpeg?x-expires={expires}&x-signature=s",
            "like_count": 100 + i,
            "comment_count": 10 + i,
            "share_count": 1 + i,
            "view_count": 1000 + i,
        }
        data.update(overrides)
        return data

    return video


@pytest.fixture
def scratch_db() -> Iterator[str]:
    """An empty database of its own, for tests that migrate up and down."""
    with scratch_database("tiktok_wh_scratch") as url:
        yield url
