"""Local tooling: the environment Airflow runs in here, bootstrap, the demo and `make up`."""
