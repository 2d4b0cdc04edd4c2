"""The Spark peer: FEATURES.md computed straight from the Kaggle CSV files in PySpark.

What a competent PySpark engineer writes on a first go, without stockbatch:
``spark.read.csv`` over the folder (every field as text), the symbol from the
file name via ``input_file_name()``, validation with column expressions (every
reason code of section 4; duplicates by a group count), the daily features
with plain window functions and one grouped pandas UDF for the recursions
(EMA, MACD signal, Wilder RSI/ATR), the quarterly table with ``groupBy`` and
``min_by``/``max_by``, sessions from ``exchange_calendars``, and Parquet output
with Spark's writer (partitioned by nothing; Spark picks the file count).
It imports nothing from stockbatch.

Usage: ``python benchmarks/spark_csv_peer.py --path DIR --out OUT --as-of 2017-11-30``.
Prints ``rows_in=... rows_clean=... rows_quarantined=... rows_deduplicated=...``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time

import numpy as np
import pandas as pd


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", required=True, help="Kaggle Huge layout folder (**/*.us.txt)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--as-of", default="2017-11-30")
    parser.add_argument("--master", default="local[*]")
    args = parser.parse_args(argv)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession, Window
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    started = time.perf_counter()
    spark = (
        SparkSession.builder.master(args.master)
        .appName("spark-csv-peer")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.shuffle.partitions", str(2 * (os.cpu_count() or 1)))
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    as_of = dt.date.fromisoformat(args.as_of)
    names = ["Date", "Open", "High", "Low", "Close", "Volume", "OpenInt"]
    raw = (
        spark.read.option("header", True)
        .option("mode", "PERMISSIVE")
        .schema(T.StructType([T.StructField(n, T.StringType()) for n in names]))
        .csv(os.path.join(args.path, "*", "*.us.txt"))
        .withColumn("file", F.input_file_name())
        .withColumn("symbol", F.upper(F.regexp_extract("file", r"([^/]+)\.us\.txt$", 1)))
    )
    num = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?\z"
    df = raw.select(
        "symbol",
        "file",
        F.when(F.col("Date").rlike(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}\z"), F.try_to_date("Date")).alias(
            "trade_date"
        ),
        *[
            F.when(F.col(c).rlike(num), F.col(c).try_cast("double")).alias(c.lower())
            for c in names[1:6]
        ],
        *[F.col(c).alias(f"{c.lower()}_txt") for c in names[1:6]],
    )
    prices = ["open", "high", "low", "close"]
    bad = F.col("trade_date").isNull()
    for c in [*prices, "volume"]:
        bad = bad | (F.col(f"{c}_txt").isNotNull() & (F.col(f"{c}_txt") != "") & F.col(c).isNull())
    tol = F.greatest(F.abs("low"), F.abs("high")) * 1e-6
    dups = df.groupBy("symbol", "trade_date").agg(
        F.count(F.lit(1)).alias("n"),
        F.count_distinct(
            *[F.coalesce(F.col(c).cast("string"), F.lit("~")) for c in [*prices, "volume"]]
        ).alias("k"),
    )
    df = df.join(dups, ["symbol", "trade_date"], "left")
    dedupe = Window.partitionBy("symbol", "trade_date").orderBy("file")
    df = df.withColumn("rn", F.row_number().over(dedupe))
    reasons = {
        "unparseable": bad,
        "missing_price": F.greatest(
            *[F.col(f"{c}_txt").isNull() | (F.col(f"{c}_txt") == "") for c in prices]
        ),
        "missing_volume": F.col("volume_txt").isNull() | (F.col("volume_txt") == ""),
        "non_positive_price": F.least(*[F.col(c) for c in prices]) <= 0,
        "high_below_low": F.col("high") < F.col("low"),
        "open_outside_range": (F.col("open") < F.col("low") - tol)
        | (F.col("open") > F.col("high") + tol),
        "close_outside_range": (F.col("close") < F.col("low") - tol)
        | (F.col("close") > F.col("high") + tol),
        "negative_volume": F.col("volume") < 0,
        "weekend_date": F.dayofweek("trade_date").isin(1, 7),
        "duplicate": (F.col("n") > 1) & (F.col("k") > 1),
        "future_date": F.col("trade_date") > F.lit(as_of),
    }
    df = df.withColumn(
        "reasons",
        F.filter(
            F.array(*[F.when(F.coalesce(e, F.lit(False)), F.lit(k)) for k, e in reasons.items()]),
            lambda x: x.isNotNull(),
        ),
    )
    collapsed = (F.col("n") > 1) & (F.col("k") == 1) & (F.col("rn") > 1)
    df = df.withColumn("collapsed", F.coalesce(collapsed, F.lit(False))).cache()
    clean = df.filter(~F.col("collapsed") & (F.size("reasons") == 0)).select(
        "symbol", "trade_date", *prices, "volume"
    )
    quarantine = df.filter(~F.col("collapsed") & (F.size("reasons") > 0))
    counts = df.agg(
        F.count(F.lit(1)).alias("rows_in"),
        F.sum((~F.col("collapsed") & (F.size("reasons") == 0)).cast("int")).alias("rows_clean"),
        F.sum((~F.col("collapsed") & (F.size("reasons") > 0)).cast("int")).alias(
            "rows_quarantined"
        ),
        F.sum(F.col("collapsed").cast("int")).alias("rows_deduplicated"),
    ).first()
    clean.write.mode("overwrite").parquet(os.path.join(args.out, "silver", "bars"))
    quarantine.write.mode("overwrite").parquet(os.path.join(args.out, "silver", "quarantine"))

    # --- daily features (the Huge set is adjusted: factor 1) ---
    w = Window.partitionBy("symbol").orderBy("trade_date")

    def roll(n: int):  # type: ignore[no-untyped-def]
        return w.rowsBetween(-(n - 1), 0)

    d = clean.withColumn("c", F.col("close")).withColumn("prev_c", F.lag("c").over(w))
    d = d.withColumn("ret_1d", F.col("c") / F.col("prev_c") - 1).withColumn(
        "log_ret_1d", F.log(F.col("c") / F.col("prev_c"))
    )
    for n in (5, 20, 50, 200):
        d = d.withColumn(
            f"sma_{n}", F.when(F.count("c").over(roll(n)) == n, F.avg("c").over(roll(n)))
        )
    d = d.withColumn("change", F.col("c") - F.col("prev_c"))
    d = d.withColumn(
        "true_range",
        F.greatest(
            F.col("high") - F.col("low"),
            F.abs(F.col("high") - F.col("prev_c")),
            F.abs(F.col("low") - F.col("prev_c")),
        ),
    )
    full20 = F.count("log_ret_1d").over(roll(20)) == 20
    d = d.withColumn(
        "volatility_20", F.when(full20, F.stddev_samp("log_ret_1d").over(roll(20)) * np.sqrt(252))
    )
    pstd = F.stddev_pop("c").over(roll(20))
    d = d.withColumn("bb_upper_20", F.col("sma_20") + 2 * pstd).withColumn(
        "bb_lower_20", F.col("sma_20") - 2 * pstd
    )
    vstd = F.stddev_samp("volume").over(roll(20))
    d = d.withColumn(
        "volume_z_20",
        F.when(
            (F.count("volume").over(roll(20)) == 20) & (vstd > 0),
            (F.col("volume") - F.avg("volume").over(roll(20))) / vstd,
        ),
    ).withColumn("dollar_volume", F.col("close") * F.col("volume"))
    rec = ["ema_12", "ema_26", "macd", "macd_signal", "macd_hist", "rsi_14", "atr_14"]
    out_schema = T.StructType([*d.schema.fields, *[T.StructField(c, T.DoubleType()) for c in rec]])

    def wilder(x: np.ndarray, first: int, n: int = 14) -> np.ndarray:
        out = np.full(len(x), np.nan)
        if len(x) > first:
            out[first] = np.mean(x[first - n + 1 : first + 1])
            for t in range(first + 1, len(x)):
                out[t] = (out[t - 1] * (n - 1) + x[t]) / n
        return out

    def recursions(pdf: pd.DataFrame) -> pd.DataFrame:
        pdf = pdf.sort_values("trade_date")
        c = pdf["c"]
        pdf["ema_12"] = c.ewm(span=12, adjust=False).mean()
        pdf["ema_26"] = c.ewm(span=26, adjust=False).mean()
        pdf["macd"] = pdf["ema_12"] - pdf["ema_26"]
        pdf["macd_signal"] = pdf["macd"].ewm(span=9, adjust=False).mean()
        pdf["macd_hist"] = pdf["macd"] - pdf["macd_signal"]
        ch = pdf["change"].to_numpy(dtype="float64")
        g = wilder(np.clip(ch, 0, None), 14)
        lo = wilder(np.clip(-ch, 0, None), 14)
        with np.errstate(divide="ignore", invalid="ignore"):
            rsi = np.where(lo == 0, np.where(g > 0, 100.0, 50.0), 100 - 100 / (1 + g / lo))
        pdf["rsi_14"] = np.where(np.isnan(g), np.nan, rsi)
        pdf["atr_14"] = wilder(pdf["true_range"].to_numpy(dtype="float64"), 13)
        return pdf[[f.name for f in out_schema.fields]]

    daily = (
        d.groupBy("symbol")
        .applyInPandas(recursions, schema=out_schema)
        .drop("c", "prev_c", "change")
    )
    daily_path = os.path.join(args.out, "gold", "daily_features")
    daily.write.mode("overwrite").parquet(daily_path)

    # --- quarterly ---
    import exchange_calendars as xcals

    daily = spark.read.parquet(daily_path)
    cal = xcals.get_calendar(
        "XNYS", start="1962-01-01", end=(as_of + dt.timedelta(days=400)).isoformat()
    )
    sess = spark.createDataFrame(pd.DataFrame({"s": cal.sessions.date}))
    q = daily.withColumn("q", F.year("trade_date") * 4 + F.quarter("trade_date") - 1)
    runmax = (
        Window.partitionBy("symbol", "q")
        .orderBy("trade_date")
        .rowsBetween(Window.unboundedPreceding, 0)
    )
    q = q.withColumn("dd", F.col("close") / F.max("close").over(runmax) - 1)
    agg = q.groupBy("symbol", "q").agg(
        F.min_by("open", "trade_date").alias("q_open"),
        F.max("high").alias("q_high"),
        F.min("low").alias("q_low"),
        F.max_by("close", "trade_date").alias("q_close"),
        F.when(F.count("log_ret_1d") >= 2, F.stddev_samp("log_ret_1d") * np.sqrt(252)).alias(
            "q_volatility"
        ),
        F.min("dd").alias("q_max_drawdown"),
        F.avg("volume").alias("q_avg_volume"),
        F.sum("dollar_volume").alias("q_dollar_volume"),
        F.count(F.lit(1)).alias("q_trading_days"),
        *[
            F.max_by(c, "trade_date").alias(f"{c}_end")
            for c in ("sma_50", "sma_200", "rsi_14", "macd", "atr_14", "volatility_20")
        ],
        F.min("trade_date").alias("first"),
        F.max("trade_date").alias("last"),
    )
    ws = Window.partitionBy("symbol").orderBy("q")
    start = F.make_date((F.col("q") / 4).cast("int"), (F.col("q") % 4) * 3 + 1, F.lit(1))
    agg = (
        agg.withColumn("quarter_start", start)
        .withColumn("quarter_end", F.date_sub(F.add_months(start, 3), 1))
        .withColumn("sym_first", F.min("first").over(Window.partitionBy("symbol")))
        .withColumn("sym_last", F.max("last").over(Window.partitionBy("symbol")))
        .withColumn(
            "q_return",
            F.when(
                F.lag("q").over(ws) == F.col("q") - 1,
                F.col("q_close") / F.lag("q_close").over(ws) - 1,
            ),
        )
        .withColumn("q_log_return", F.log1p("q_return"))
    )
    expected = (
        agg.join(
            sess,
            (sess.s >= F.greatest("quarter_start", "sym_first"))
            & (sess.s <= F.least("quarter_end", "sym_last")),
            "left",
        )
        .groupBy("symbol", "q")
        .agg(F.count("s").alias("q_expected_days"))
    )
    last_date = daily.agg(F.max("trade_date")).first()[0]
    per_q = (
        sess.withColumn("q", F.year("s") * 4 + F.quarter("s") - 1)
        .groupBy("q")
        .agg(F.max("s").alias("last_session"))
        .withColumn("available_at", F.lead("last_session").over(Window.orderBy("q")))
    )
    out = (
        agg.join(expected, ["symbol", "q"])
        .join(per_q, "q", "left")
        .withColumn("q_missing_days", F.col("q_expected_days") - F.col("q_trading_days"))
        .withColumn("close_to_sma_200_end", F.col("q_close") / F.col("sma_200_end") - 1)
        .withColumn("q_complete", F.lit(last_date) >= F.col("last_session"))
    )
    next_ok = (F.lead("q").over(ws) == F.col("q") + 1) & F.lead("q_complete").over(ws)
    out = out.withColumn("label_next_q_return", F.when(next_ok, F.lead("q_return").over(ws)))
    out.write.mode("overwrite").parquet(os.path.join(args.out, "gold", "quarterly_features"))
    print(
        f"rows_in={counts['rows_in']} rows_clean={counts['rows_clean']} "
        f"rows_quarantined={counts['rows_quarantined']} "
        f"rows_deduplicated={counts['rows_deduplicated']} in {time.perf_counter() - started:.1f}s"
    )
    spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
