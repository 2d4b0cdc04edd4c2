"""The REST API and the dashboard (``stockbatch serve``).

- ``app``: ``create_app(settings)``, the FastAPI application;
- ``data``: instruments, daily, quarterly endpoints; ``operations``: runs, quality,
  quarantine, audit, users, tokens, probes, metrics;
- ``pages`` / ``page_data``: the dashboard's routes and what they show (templates and
  assets in ``stockbatch.web``; plotly.js served from the plotly package);
- ``security``: the ``Access`` dependency every route declares; ``accounts``: users,
  passwords (argon2id) and tokens; ``observe``: audit log and Prometheus middleware;
- ``formats``: JSON pages with cursors, CSV/Parquet streams; ``schemas``: response models;
- ``status``: readiness and the overview's warnings; ``context``: engines and settings.
"""
