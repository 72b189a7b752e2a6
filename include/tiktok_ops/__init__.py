"""What production runs besides the DAGs: bootstrap, the DAGs' least-privilege role, the settings."""
