"""The peers scripts/bench_peers.py compares agentdeck with: a Dramatiq app and a Celery app,
each with the driver that sends it work, and how their workers tell the driver a task is done.

These modules run in the benchmark's own venv (``.bench-venv/``, the ``bench`` extra), with
``scripts/`` on the import path; the product never imports them.
"""
