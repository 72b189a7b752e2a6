"""Notifiers of the TikTok provider (Airflow's ``BaseNotifier``)."""
