"""Run ``python -m tiktok_sim``; see :mod:`tiktok_sim.cli`."""

from __future__ import annotations

import sys

from tiktok_sim.cli import main

if __name__ == "__main__":
    sys.exit(main())
