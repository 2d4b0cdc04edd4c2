"""The feature catalog: one engine-neutral declaration of FEATURES.md sections 1-3."""

from __future__ import annotations

import subprocess
import sys

import pytest

from stockbatch import schema
from stockbatch.features import catalog
from stockbatch.features.catalog import (
    ADJUSTMENT,
    AGGREGATE_KINDS,
    DAILY_FEATURES,
    KINDS,
    PERIOD_KINDS,
    QUARTERLY_FEATURES,
    ROW_KINDS,
    FeatureDef,
    by_name,
    check_order,
)
from stockbatch.features.polars import (
    AGGREGATE_COMPILERS,
    PERIOD_COMPILERS,
    ROW_COMPILERS,
)


def published(defs: tuple[FeatureDef, ...], role: str = "feature") -> tuple[str, ...]:
    return tuple(d.name for d in defs if d.role == role)


def test_daily_names_match_the_schema_exactly() -> None:
    assert published(DAILY_FEATURES) == schema.DAILY_FEATURE_COLUMNS


def test_quarterly_names_match_the_schema_exactly() -> None:
    assert set(published(QUARTERLY_FEATURES)) == set(schema.QUARTERLY_FEATURE_COLUMNS)
    assert len(published(QUARTERLY_FEATURES)) == len(schema.QUARTERLY_FEATURE_COLUMNS)
    assert set(published(QUARTERLY_FEATURES, "meta")) == set(schema.QUARTERLY_META_COLUMNS)
    assert published(QUARTERLY_FEATURES, "label") == schema.QUARTERLY_LABEL_COLUMNS


def test_intermediates_are_not_schema_columns() -> None:
    names = {d.name for d in (*ADJUSTMENT, *DAILY_FEATURES) if d.role == "intermediate"}
    assert names == {"factor", "o", "h", "l", "c", "v", "_change", "_gain", "_loss",
                     "_avg_gain", "_avg_loss"}  # fmt: skip
    assert not names & set(schema.DAILY_FEATURES.names)


def test_definitions_are_in_dependency_order_and_no_feature_reads_the_label() -> None:
    adjusted = [d.name for d in ADJUSTMENT]
    check_order(ADJUSTMENT, schema.DAILY_BAR_COLUMNS)
    check_order(DAILY_FEATURES, [*schema.DAILY_BAR_COLUMNS, *adjusted])
    check_order(
        QUARTERLY_FEATURES,
        [*schema.DAILY_FEATURES.names, *adjusted, *schema.QUARTERLY_KEY_COLUMNS],
    )
    by_name((*ADJUSTMENT, *DAILY_FEATURES, *QUARTERLY_FEATURES))  # names unique


def test_check_order_rejects_forward_references_and_label_reads() -> None:
    early = FeatureDef("x", "log1p", ("y",))
    with pytest.raises(ValueError, match="before they are defined"):
        check_order([early, FeatureDef("y", "constant", params={"value": 1.0})], [])
    label = FeatureDef("lbl", "constant", params={"value": 1.0}, role="label")
    leak = FeatureDef("feat", "log1p", ("lbl",))
    with pytest.raises(ValueError, match="label"):
        check_order([label, leak], [])


def test_windows_and_params_as_the_contract_says() -> None:
    d = by_name((*DAILY_FEATURES, *QUARTERLY_FEATURES))
    assert [d[f"sma_{n}"].window for n in (5, 20, 50, 200)] == [5, 20, 50, 200]
    assert (d["ema_12"].window, d["ema_26"].window, d["macd_signal"].window) == (12, 26, 9)
    assert (d["_avg_gain"].window, d["atr_14"].window) == (14, 14)
    assert dict(d["volatility_20"].params) == {"ddof": 1, "annualization": 252.0}
    assert dict(d["bb_upper_20"].params) == {"k": 2.0, "ddof": 0}
    assert dict(d["bb_lower_20"].params) == {"k": -2.0, "ddof": 0}
    assert dict(d["volume_z_20"].params) == {"ddof": 1}
    assert d["q_volatility"].param("min_count") == 2
    assert d["q_avg_volume"].inputs == ("volume",)  # raw volume, not the adjusted v
    assert d["q_open"].inputs == ("o",)  # the adjusted open
    assert d["q_open"].kind == "first_non_null"  # v2: skips rows whose open was not recorded
    assert d["dollar_volume"].inputs == ("close", "volume")  # unadjusted
    assert all(x.version == schema.FEATURE_SET_VERSION for x in d.values())


def test_no_daily_feature_reads_the_open() -> None:
    """Contract v2: open is null when not recorded; no daily feature may depend on it."""
    defs = by_name((*ADJUSTMENT, *DAILY_FEATURES, *QUARTERLY_FEATURES))

    def reads(name: str) -> set[str]:
        d = defs.get(name)
        if d is None:
            return {name}  # a bar column
        return {name}.union(*(reads(i) for i in d.inputs))

    for d in DAILY_FEATURES:
        assert not reads(d.name) & {"open", "o"}, d.name
    readers = {d.name for d in QUARTERLY_FEATURES if reads(d.name) & {"open", "o"}}
    assert readers == {"q_open"}


def test_definitions_are_immutable_and_kinds_checked() -> None:
    d = DAILY_FEATURES[0]
    with pytest.raises(AttributeError):
        d.window = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        d.params["lag"] = 2  # type: ignore[index]
    with pytest.raises(ValueError, match="unknown kind"):
        FeatureDef("x", "no_such_kind")
    with pytest.raises(KeyError, match="needs params"):
        d.param("nope")


def test_every_kind_has_exactly_one_polars_compiler() -> None:
    used = {d.kind for d in (*ADJUSTMENT, *DAILY_FEATURES, *QUARTERLY_FEATURES)}
    assert used <= KINDS
    assert set(ROW_COMPILERS) == ROW_KINDS
    assert set(AGGREGATE_COMPILERS) == AGGREGATE_KINDS
    assert set(PERIOD_COMPILERS) == PERIOD_KINDS
    assert not (ROW_KINDS & AGGREGATE_KINDS) and not (ROW_KINDS & PERIOD_KINDS)


def test_catalog_imports_no_engine() -> None:
    # The Spark engine compiles the same catalog: it must not drag Polars in.
    code = (
        "import sys, stockbatch.features.catalog as c; "
        "bad = [m for m in ('polars', 'pyspark', 'pandas') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert catalog.ANNUALIZATION == 252.0
