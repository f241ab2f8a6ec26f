"""``python -m bench``: latency and throughput of walrus_tasks against a Celery no-op baseline."""
