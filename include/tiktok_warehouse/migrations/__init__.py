"""Alembic migrations of the warehouse; run them with ``python -m tiktok_warehouse.migrate``.

A package (not just a directory) so that ``env.py`` ships in wheels: the project's package-data
lists only ``migrations/*.ini``, ``*.mako`` and ``versions/*.py``.
"""
