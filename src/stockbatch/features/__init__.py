"""Feature definitions (``catalog``) and the engines that compile them.

``stockbatch.features.catalog`` declares FEATURES.md sections 1-3 once, as
engine-neutral data; ``stockbatch.features.polars_engine`` compiles it to
Polars (the embedded default). Importing this package imports no engine.
"""

from stockbatch.features.catalog import (
    ADJUSTMENT,
    DAILY_FEATURES,
    QUARTERLY_FEATURES,
    FeatureDef,
)

__all__ = ["ADJUSTMENT", "DAILY_FEATURES", "QUARTERLY_FEATURES", "FeatureDef"]
