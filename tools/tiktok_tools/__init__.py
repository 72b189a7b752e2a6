"""Tooling that does not ship: the demo, `make up`, the benchmark, the soak, the embedded Postgres server.

It may import anything of ours; nothing imports it (tests aside).
"""
