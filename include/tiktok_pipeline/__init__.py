"""Building blocks shared by the four DAGs: defaults, account selection, checks and runbooks."""
