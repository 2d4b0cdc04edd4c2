"""Deterministic 10x scale-up of a Kaggle "Huge Stock Market Dataset" folder.

The full Huge set is about ten times the shared 10% sample; this builds a
dataset of that size from the sample so the benchmark can run at full scale
without the original download.

Scheme (generator version 1):

- Every input file ``<dir>/<stem>.us.txt`` is copied byte for byte, and 9
  variants ``<dir>/<stem>x<k>.us.txt`` (k = 1..9) are written next to it,
  e.g. ``aapl.us.txt`` -> ``aaplx1.us.txt`` .. ``aaplx9.us.txt`` (symbols
  AAPLX1..AAPLX9). No real US ticker contains a digit and no input stem does
  (checked; the run fails otherwise), so a variant never collides with a real
  symbol nor with another variant.
- In a variant, a data row with 7 fields whose Open/High/Low/Close are plain
  decimals (at most 6 decimals, optional ``-``) and whose Volume is an integer
  gets prices multiplied by ``f_k = (100 + k) / 100`` and volume by ``1 / f_k``
  (rounded half up in magnitude, so a volume of 1 stays 1 and 0 stays 0), so
  the money traded stays about the same. Prices
  are scaled in exact decimal integer arithmetic (no float rounding), so every
  order relation of the original row holds exactly in the variant: a row with
  high < low, an open outside [low, high], a zero or negative value stays so.
  Dates, OpenInt, the header, line endings and every other row (wrong field
  count, unparseable text, blank lines) are copied verbatim: bad rows stay bad.
- The output folder holds ``MANIFEST.json``: the scheme, the SHA-256 of every
  input and output file. A rerun whose inputs and scheme match the manifest
  (and whose outputs exist with the recorded sizes) does nothing.

Run: ``python benchmarks/synth.py [--src DIR] [--out DIR] [--verify]``.
Default source ``$STOCKBATCH_SHARED_DATA/kaggle/huge-stock-market-sample``,
default output ``benchmarks/out/synth10x`` (git-ignored).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl

GENERATOR_VERSION = 1
VARIANTS = 9
SCALE_DECIMALS = 6  # input prices with up to 6 decimals are scaled exactly
SUFFIX = ".us.txt"
HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "out" / "synth10x"

PRICE_RE = r"^-?[0-9]+(\.[0-9]{1,6})?$"
INT_RE = r"^-?[0-9]+$"


def dataset(size: str) -> Path:
    """The CSV folder of one benchmark size: ``sample`` (the shared Huge sample) or
    ``10x`` (built from it on first use, then cached)."""
    shared = os.environ.get("STOCKBATCH_SHARED_DATA")
    if not shared:
        raise SystemExit("set STOCKBATCH_SHARED_DATA to the shared data/ folder")
    sample = Path(shared) / "kaggle" / "huge-stock-market-sample"
    if size == "sample":
        return sample
    if size == "10x":
        return build(sample, DEFAULT_OUT)
    raise SystemExit(f"unknown size {size!r}: use sample or 10x")


def default_src() -> Path:
    """The shared 10% Huge sample, located via ``STOCKBATCH_SHARED_DATA``."""
    root = os.environ.get("STOCKBATCH_SHARED_DATA")
    if not root:
        raise SystemExit("set STOCKBATCH_SHARED_DATA (the shared data/ folder) or pass --src")
    return Path(root) / "kaggle" / "huge-stock-market-sample"


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of some bytes."""
    return hashlib.sha256(data).hexdigest()


def variant_name(name: str, k: int) -> str:
    """``aapl.us.txt`` -> ``aaplx<k>.us.txt``."""
    return f"{name.removesuffix(SUFFIX)}x{k}{SUFFIX}"


def _decimal_units(col: str) -> pl.Expr:
    """``|value| * 10**6`` of a plain decimal text, as an exact integer."""
    parts = pl.col(col).str.strip_prefix("-").str.split_exact(".", 1)
    whole = parts.struct.field("field_0").cast(pl.Int64, strict=False)
    frac = parts.struct.field("field_1").fill_null("").str.pad_end(SCALE_DECIMALS, "0")
    return whole * 10**SCALE_DECIMALS + frac.cast(pl.Int64, strict=False)


def _scaled_price(col: str, k: int) -> pl.Expr:
    """Exact decimal ``value * (100 + k) / 100`` as text, trailing zeros dropped.

    Reads ``<col>_units`` (see :func:`_decimal_units`) and ``<col>_neg``.
    """
    scaled = pl.col(f"{col}_units") * (100 + k)  # |value| * f_k * 10**8
    denom = 10 ** (SCALE_DECIMALS + 2)
    int_part = (scaled // denom).cast(pl.String)
    frac_part = (
        (scaled % denom)
        .cast(pl.String)
        .str.pad_start(SCALE_DECIMALS + 2, "0")
        .str.strip_chars_end("0")
    )
    body = (
        pl.when(frac_part == "")
        .then(int_part)
        .otherwise(pl.concat_str(int_part, pl.lit("."), frac_part))
    )
    return pl.when(pl.col(f"{col}_neg") & (scaled != 0)).then(pl.lit("-") + body).otherwise(body)


def _scaled_volume(col: str, k: int) -> pl.Expr:
    """Integer volume divided by f_k, rounded half up in magnitude (1 stays 1, 0 stays 0)."""
    v = pl.col(col).cast(pl.Int64, strict=False)
    magnitude = (v.abs() * 200 + (100 + k)) // (2 * (100 + k))
    return (magnitude * v.sign()).cast(pl.String)


def _variant_lines(lines: list[str]) -> list[list[str]]:
    """The 9 variants of a list of data lines (no header; a trailing ``\\r`` is kept)."""
    frame = pl.DataFrame({"line": lines}, schema={"line": pl.String})
    frame = frame.with_columns(
        cr=pl.col("line").str.ends_with("\r"),
        body=pl.col("line").str.strip_suffix("\r"),
    )
    frame = frame.with_columns(n=pl.col("body").str.count_matches(",", literal=True) + 1)
    fields = pl.col("body").str.split_exact(",", 6)
    names = ["date", "open", "high", "low", "close", "volume", "openint"]
    frame = frame.with_columns(
        *[fields.struct.field(f"field_{i}").alias(n) for i, n in enumerate(names)]
    )
    scalable = (pl.col("n") == 7) & pl.col("volume").str.contains(INT_RE)
    for price in ("open", "high", "low", "close"):
        scalable = scalable & pl.col(price).str.contains(PRICE_RE)
    frame = frame.with_columns(scalable=scalable.fill_null(False))
    prices = ("open", "high", "low", "close")
    # Parse once, scale nine times; only scalable rows are kept for the per-variant work.
    rows = frame.filter("scalable").with_columns(
        *[_decimal_units(p).alias(f"{p}_units") for p in prices],
        *[pl.col(p).str.starts_with("-").alias(f"{p}_neg") for p in prices],
        pl.when(pl.col("cr")).then(pl.lit("\r")).otherwise(pl.lit("")).alias("eol"),
    )
    at = frame.with_row_index("i").filter("scalable")["i"]
    out = []
    for k in range(1, VARIANTS + 1):
        row = pl.concat_str(
            pl.col("date"),
            *[_scaled_price(p, k) for p in prices],
            _scaled_volume("volume", k),
            pl.col("openint"),
            separator=",",
        )
        scaled = rows.select(pl.concat_str(row, pl.col("eol")))
        lines_k = frame["line"].scatter(at, scaled.to_series())
        out.append(lines_k.to_list())
    return out


def variants_of_many(contents: list[bytes]) -> list[list[bytes]]:
    """For each input file's bytes, its 9 variant files' bytes (one vectorised pass)."""
    headers: list[str] = []
    spans: list[tuple[int, int]] = []
    lines: list[str] = []
    for data in contents:
        split = data.decode("utf-8").split("\n") if data else [""]
        headers.append(split[0])
        spans.append((len(lines), len(lines) + len(split) - 1))
        lines.extend(split[1:])
    per_variant = _variant_lines(lines)
    result = []
    for i, data in enumerate(contents):
        if not data:
            result.append([b""] * VARIANTS)
            continue
        a, b = spans[i]
        result.append(["\n".join([headers[i], *v[a:b]]).encode("utf-8") for v in per_variant])
    return result


def variants_of(data: bytes) -> list[bytes]:
    """The 9 variant files of one input file's bytes."""
    return variants_of_many([data])[0]


def input_files(src: Path) -> list[Path]:
    """The Huge-layout files below ``src``, sorted by relative path."""
    files = sorted(src.rglob(f"*{SUFFIX}"))
    if not files:
        raise SystemExit(f"no *{SUFFIX} files below {src}")
    for f in files:
        if re.search(r"[0-9]", f.name.removesuffix(SUFFIX)):
            raise SystemExit(f"{f}: a stem with a digit would break the collision-free name scheme")
    return files


def inputs_digest(src: Path, files: list[Path]) -> dict[str, str]:
    """SHA-256 of every input file, by relative path."""
    return {f.relative_to(src).as_posix(): sha256_bytes(f.read_bytes()) for f in files}


def up_to_date(out: Path, inputs: dict[str, str], verify: bool) -> bool:
    """True when ``out`` already holds this scheme's output of exactly these inputs."""
    manifest_path = out / "MANIFEST.json"
    if not manifest_path.exists():
        return False
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("generator_version") != GENERATOR_VERSION or manifest.get("inputs") != inputs:
        return False
    for rel, entry in manifest["outputs"].items():
        path = out / rel
        if not path.exists() or path.stat().st_size != entry["bytes"]:
            return False
        if verify and sha256_bytes(path.read_bytes()) != entry["sha256"]:
            return False
    return True


def build(src: Path, out: Path, verify: bool = False, quiet: bool = False) -> Path:
    """Create (or confirm) the 10x dataset at ``out``; returns ``out``."""
    files = input_files(src)
    inputs = inputs_digest(src, files)
    if up_to_date(out, inputs, verify):
        if not quiet:
            print(f"synth: {out} is up to date ({len(files) * (VARIANTS + 1)} files), skipped")
        return out
    started = time.perf_counter()
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    outputs: dict[str, dict[str, Any]] = {}
    batch = 100  # files per vectorised pass: bounded memory, few Python-level calls
    for first in range(0, len(files), batch):
        chunk = files[first : first + batch]
        contents = [f.read_bytes() for f in chunk]
        for f, data, variants in zip(chunk, contents, variants_of_many(contents), strict=True):
            rel = f.relative_to(src)
            targets = [(rel, data)] + [
                (rel.with_name(variant_name(rel.name, k)), v)
                for k, v in enumerate(variants, start=1)
            ]
            for target, payload in targets:
                path = tmp / target
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(payload)
                outputs[target.as_posix()] = {
                    "sha256": sha256_bytes(payload),
                    "bytes": len(payload),
                }
        if not quiet:
            print(f"synth: {first + len(chunk)}/{len(files)} input files", file=sys.stderr)
    manifest = {
        "generator_version": GENERATOR_VERSION,
        "scheme": "benchmarks/synth.py docstring: <stem>x<k>.us.txt, k=1..9, prices*(100+k)/100 "
        "exact, volume*100/(100+k) rounded, other rows verbatim",
        "source": str(src),
        "inputs": inputs,
        "outputs": dict(sorted(outputs.items())),
    }
    (tmp / "MANIFEST.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    if not quiet:
        total = sum(int(e["bytes"]) for e in outputs.values())
        print(
            f"synth: wrote {len(outputs)} files ({total / 1e6:.0f} MB) to {out} "
            f"in {time.perf_counter() - started:.0f}s"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--src",
        type=Path,
        default=None,
        help="Huge-layout folder (default: "
        "$STOCKBATCH_SHARED_DATA/kaggle/huge-stock-market-sample)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"default {DEFAULT_OUT}")
    parser.add_argument(
        "--verify", action="store_true", help="re-hash existing outputs before deciding to skip"
    )
    args = parser.parse_args(argv)
    build(args.src or default_src(), args.out, verify=args.verify)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
