"""The benchmark (``make bench``): ``python -m tiktok_tools.bench``; figures in the README, Performance."""
