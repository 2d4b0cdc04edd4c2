"""Orchestration on Apache Airflow: what the DAGs in ``dags/`` call, and the client
of an Airflow's REST API (``stockbatch orchestrate``).

- ``tasks``: one function per DAG task (plain Python, no Airflow import): each
  calls the same stage function as ``stockbatch run`` and records its stage in the
  DAG run's one manifest (:func:`stockbatch.runs.stage_recording`);
- ``client``: trigger and follow DAG runs through Airflow's REST API.
"""
