"""The stages as functions of the settings: what the CLI, the DAGs and the API call.

``ingest`` (sources -> bronze, or -> Kafka), ``collect`` (Kafka -> bronze),
``process`` (bronze -> silver -> gold; :mod:`stockbatch.process`), ``load``
(gold -> warehouse, then the search sync) and ``run`` (all of them as one
recorded run). Each returns its record from :mod:`stockbatch.results`; a run is
recorded by :mod:`stockbatch.runs`.
"""

from __future__ import annotations

from stockbatch.pipeline.collect import collect
from stockbatch.pipeline.ingest import ingest
from stockbatch.pipeline.run import check_backends, run
from stockbatch.process import process

# ``load`` is not re-exported: it imports SQLAlchemy and Alembic (~0.3 s), which
# ingest, collect and process never need. Import it from
# ``stockbatch.pipeline.load``; a lazy re-export here was shadowed by the submodule
# itself once anything imported it (the Airflow task then called a module).
__all__ = ["check_backends", "collect", "ingest", "process", "run"]
