"""Postgres warehouse of TikTok Display API data: schema, migrations, token store and loads."""
