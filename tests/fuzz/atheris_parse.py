"""Coverage-guided fuzzing (atheris, optional) of the Kaggle parse -> validate chain.

Not collected by pytest. Run: ``.venv/bin/python tests/fuzz/atheris_parse.py -runs=20000``
(libFuzzer flags; ``-max_total_time=300`` for a time budget). The first input byte
picks a file name/layout, the rest is the file (after a real header when its
high bit is set). The property is the hypothesis
test's: ``UnknownLayoutError`` or a table of one row per non-blank body line, every row
then accounted for by ``validate``, no clean value or feature infinite. Any other
exception or failed assertion is a crash that libFuzzer reports with the input.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris
import numpy  # noqa: F401  (imported before instrumenting: only stockbatch is instrumented;
import polars  # noqa: F401  instrumented Polars wrappers misbehave, e.g. Series.rle() -> None)
import pyarrow  # noqa: F401

sys.path[:0] = [
    str(Path(__file__).resolve().parents[1]),
    str(Path(__file__).resolve().parents[2] / "src"),
]

with atheris.instrument_imports():
    from fuzz.check import assert_features_finite, bronze_frame, validate_accounted
    from stockbatch.sources.base import UnknownLayoutError
    from stockbatch.sources.kaggle_parse import LAYOUTS, WHITESPACE, parse_kaggle_bytes

NAMES = ("adm.us.txt", "AAPL_data.csv", "AON.csv", "x.txt")


def body_lines(data: bytes) -> int | None:
    text = data.decode("utf-8-sig", errors="replace").replace("\r\n", "\n")
    lines = text.split("\n")
    for idx, line in enumerate(lines):
        if line.strip(WHITESPACE):
            return sum(1 for t in lines[idx + 1 :] if t.strip(WHITESPACE))
    return None


def one(data: bytes) -> None:
    if not data:
        return
    name, body = NAMES[data[0] % len(NAMES)], data[1:]
    if data[0] & 0x80:  # a real header first (byte soup rarely spells one)
        body = ",".join(LAYOUTS[data[0] % len(LAYOUTS)].header).encode() + b"\n" + body
    try:
        table = parse_kaggle_bytes(body, file_name=name, ref=name)
    except UnknownLayoutError:
        return
    assert table.num_rows == (body_lines(body) or 0)
    res = validate_accounted(bronze_frame(table))
    assert_features_finite(res)


def main() -> None:
    atheris.Setup(sys.argv, one)
    atheris.Fuzz()  # libFuzzer prints "Done <N> runs in <S> second(s)" and exits


if __name__ == "__main__":
    main()
