"""The stages as functions of the settings: what the CLI, the DAGs and the API call.

``ingest`` (sources -> bronze, or -> Kafka), ``collect`` (Kafka -> bronze),
``process`` (bronze -> silver -> gold; :mod:`stockbatch.process`), ``load``
(gold -> warehouse, then the search sync) and ``run`` (all of them as one
recorded run). Each returns its record from :mod:`stockbatch.results`; a run is
recorded by :mod:`stockbatch.runs`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stockbatch.pipeline.collect import collect
from stockbatch.pipeline.ingest import ingest
from stockbatch.pipeline.run import check_backends, run
from stockbatch.process import process

if TYPE_CHECKING:
    from stockbatch.pipeline.load import load


def __getattr__(name: str) -> Any:
    # ``load`` on first use: it imports SQLAlchemy and Alembic (~0.3 s), which the
    # ingest, collect and process commands never need.
    if name == "load":
        from stockbatch.pipeline.load import load

        return load
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["check_backends", "collect", "ingest", "load", "process", "run"]
