"""Monitoring's writes (the one place that changes monitoring data), split by subject."""
