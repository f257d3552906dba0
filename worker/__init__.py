"""CargoScan workers: the batch pipeline, the Celery app and task, and Prometheus metrics.

``celery -A worker worker`` finds the Celery app in ``worker.celery``.
"""
