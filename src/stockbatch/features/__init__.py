"""Feature definitions (``catalog``) and the engines that compile them.

:mod:`stockbatch.features.catalog` declares FEATURES.md sections 1-3 once, as
engine-neutral data; :mod:`stockbatch.features.polars` compiles it to Polars
(the embedded default) and :mod:`stockbatch.features.spark` to Spark.
Importing this package imports no engine.
"""

from stockbatch.features.catalog import (
    ADJUSTMENT,
    DAILY_FEATURES,
    QUARTERLY_FEATURES,
    FeatureDef,
)

__all__ = ["ADJUSTMENT", "DAILY_FEATURES", "QUARTERLY_FEATURES", "FeatureDef"]
