"""KaggleSource against hostile or broken folder entries, and bounded echo of input.

Issue "Hostile input and faults", items 3 (one unreadable entry never aborts, hangs
or silently drops input) and 8 (input quoted in messages is escaped and cut short).
Every entry here is hand-made; the good files are real fixture files.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import stockbatch
from stockbatch.sources import kaggle
from stockbatch.sources.base import (
    ECHO_LIMIT,
    Source,
    SourceError,
    SourceUnit,
    UnknownLayoutError,
    echo,
)
from stockbatch.sources.kaggle import KaggleSource
from stockbatch.sources.kaggle_parse import parse_kaggle_bytes
from stockbatch.sources.symbols import normalize_symbol, symbol_for_file

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "sources" / "kaggle"
GOOD = FIXTURES / "huge" / "btu_.us.txt"  # 14 rows
GOOD2 = FIXTURES / "huge" / "dcng.us.txt"
SRC = Path(stockbatch.__file__).resolve().parents[1]

# Every test that could hang on today's code (a FIFO, /dev/zero) fails instead.
pytestmark = pytest.mark.timeout(60)


@contextmanager
def hang_guard(seconds: float) -> Iterator[None]:
    """Fail (TimeoutError) instead of blocking when the block hangs, e.g. on a FIFO."""

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"still listing after {seconds}s: an entry blocked the scan")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def listing(src: KaggleSource) -> dict[str, str | None]:
    """ref -> error (None for a readable unit)."""
    return {u.ref: u.error for u in src.units()}


def ingest_like_the_pipeline(src: KaggleSource) -> tuple[dict[str, int], dict[str, str]]:
    """(rows per landed ref, error per rejected ref), the way pipeline.ingest counts."""
    landed: dict[str, int] = {}
    rejected: dict[str, str] = {}
    for unit, outcome in src.read_many(list(src.units())):
        if isinstance(outcome, SourceError):
            rejected[unit.ref] = str(outcome)
        else:
            landed[unit.ref] = outcome.num_rows
    return landed, rejected


@pytest.fixture()
def world_dir() -> Iterator[Path]:
    """A folder another user can enter (pytest's tmp_path is private to root)."""
    d = Path(tempfile.mkdtemp(prefix="stockbatch-hostile-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        for p in [d, *d.rglob("*")]:  # give back what a test took away, then remove
            if not p.is_symlink():
                p.chmod(0o755)
        shutil.rmtree(d)


def as_other_user() -> list[str]:
    """The command prefix that drops root (nothing when not root)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv"):
        return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    if shutil.which("runuser"):
        return ["runuser", "-u", "nobody", "--"]
    pytest.skip("needs setpriv or runuser to read as a non-root user")


def units_as_other_user(root: Path) -> dict[str, str | None]:
    """``listing`` of ``root``, computed by a non-root process."""
    code = (
        "import json, sys; from stockbatch.sources.kaggle import KaggleSource;"
        "print(json.dumps({u.ref: u.error for u in KaggleSource(sys.argv[1]).units()}))"
    )
    res = subprocess.run(
        [*as_other_user(), sys.executable, "-c", code, str(root)],
        env={**os.environ, "PYTHONPATH": str(SRC), "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    result: dict[str, str | None] = json.loads(res.stdout)
    return result


# -- echo ------------------------------------------------------------------------------


def test_echo_short_text_is_a_repr() -> None:
    assert echo("ticker,price") == "'ticker,price'"
    assert echo("it's") == "'it\\'s'"
    assert echo("a\x1b[31mb\nc\u202ed\x00") == "'a\\x1b[31mb\\nc\\u202ed\\x00'"


def test_echo_cuts_long_text_and_says_how_long() -> None:
    text = "0123456789" * 1_000_000
    shown = echo(text)
    assert shown == f"'{text[:ECHO_LIMIT]}'... (10,000,000 chars)"


def test_echo_counts_escapes_in_the_limit() -> None:
    shown = echo("\x00" * 500)
    body = shown[1 : shown.index("'", 1)]
    assert len(body) <= ECHO_LIMIT and body.startswith("\\x00")
    assert shown.endswith("(500 chars)")
    assert all(ch.isprintable() for ch in shown)


def test_echo_bytes_and_unquoted() -> None:
    assert echo(b"ok\xff") == "'ok\\xff'"
    assert echo(b"x" * 10_000).endswith("... (10,000 bytes)")
    assert echo("Bad Request: it's", quote=False) == "Bad Request: it's"


# -- item 8: bounded echo of input in errors -------------------------------------------


def test_ten_megabyte_header_is_quoted_at_most_100_chars() -> None:
    line = "".join(chr(ord("a") + i % 26) for i in range(10_000_000))
    with pytest.raises(UnknownLayoutError) as err:
        parse_kaggle_bytes(line.encode() + b"\n", file_name="x.us.txt", ref="x.us.txt")
    message = str(err.value)
    assert len(message) < 300
    assert line[:ECHO_LIMIT] in message and line[: ECHO_LIMIT + 1] not in message
    assert "(10,000,000 chars)" in message


def test_header_with_control_characters_is_escaped() -> None:
    data = b"\x1b]0;pwned\x07,\x1b[2J\r\x00\n1,2\n"
    with pytest.raises(UnknownLayoutError) as err:
        parse_kaggle_bytes(data, file_name="x.us.txt", ref="x.us.txt")
    message = str(err.value)
    assert message.isprintable()
    assert "\\x1b]0;pwned\\x07" in message


def test_not_quoted_when_reached_through_a_link_out_of_the_folder() -> None:
    with pytest.raises(UnknownLayoutError) as err:
        parse_kaggle_bytes(b"root:secret:1:2\n", file_name="x.us.txt", ref="x", quote=False)
    assert "secret" not in str(err.value)
    assert "not shown" in str(err.value)


def test_file_names_in_errors_are_escaped_and_cut() -> None:
    name = "\x1b[2J" + "n" * 300 + ".csv"
    with pytest.raises(UnknownLayoutError) as err:
        parse_kaggle_bytes(b"Date,Open,High,Low,Close,Volume,OpenInt\n", file_name=name, ref="r")
    assert str(err.value).isprintable()
    assert "n" * (ECHO_LIMIT + 1) not in str(err.value)
    for call in (
        lambda: normalize_symbol(name[:-4]),
        lambda: symbol_for_file("kaggle-sp500", name),
    ):
        with pytest.raises(ValueError) as verr:
            call()
        assert str(verr.value).isprintable() and "n" * (ECHO_LIMIT + 1) not in str(verr.value)


def test_metadata_error_quotes_at_most_100_chars(tmp_path: Path) -> None:
    """Arrow's parse error quotes the bad row; the message cuts it."""
    row = "Z" * 5000
    (tmp_path / "symbols_valid_meta.csv").write_text(
        "Symbol,Security Name,Listing Exchange,ETF\nA,Agilent,N,N\n" + row + "\n"
    )
    shutil.copy(GOOD, tmp_path)
    src = KaggleSource(tmp_path)
    got = listing(src)
    error = got["symbols_valid_meta.csv"]
    assert error is not None and "NASDAQ metadata" in error
    assert "Z" * (ECHO_LIMIT + 1) not in error
    assert got["btu_.us.txt"] is None
    assert src.instruments() is None  # the bad file is rejected, not half-read
    with pytest.raises(SourceError, match="NASDAQ metadata"):  # no units(): raised as before
        KaggleSource(tmp_path).instruments()


# -- item 3: entries that cannot be read are rejected by name, the rest goes on --------


def test_dangling_link_and_link_loop_are_rejected_by_name(tmp_path: Path) -> None:
    shutil.copy(GOOD, tmp_path)
    (tmp_path / "dangling.us.txt").symlink_to(tmp_path / "nowhere.us.txt")
    (tmp_path / "loop.us.txt").symlink_to("loop.us.txt")
    (tmp_path / "a.csv").symlink_to("b.csv")
    (tmp_path / "b.csv").symlink_to("a.csv")
    landed, rejected = ingest_like_the_pipeline(KaggleSource(tmp_path))
    assert landed == {"btu_.us.txt": 14}
    assert set(rejected) == {"dangling.us.txt", "loop.us.txt", "a.csv", "b.csv"}
    assert "broken symbolic link" in rejected["dangling.us.txt"]
    assert "nowhere.us.txt" in rejected["dangling.us.txt"]
    assert "loop" in rejected["loop.us.txt"] and "loop" in rejected["a.csv"]


def test_fifo_named_like_data_is_never_opened(tmp_path: Path) -> None:
    shutil.copy(GOOD, tmp_path)
    os.mkfifo(tmp_path / "fifo.us.txt")  # opening it would block forever
    landed, rejected = ingest_like_the_pipeline(KaggleSource(tmp_path))
    assert landed == {"btu_.us.txt": 14}
    assert "not a regular file (a FIFO)" in rejected["fifo.us.txt"]


# /dev/null stands for /dev/zero in-process: a regression must not fill the memory of
# the test run (tests/e2e/test_hostile_inputs.py links /dev/zero, memory-capped).
def test_link_to_a_device_is_never_opened(tmp_path: Path) -> None:
    shutil.copy(GOOD, tmp_path)
    (tmp_path / "null.us.txt").symlink_to("/dev/null")
    (tmp_path / "null_data.csv").symlink_to("/dev/null")
    landed, rejected = ingest_like_the_pipeline(KaggleSource(tmp_path))
    assert landed == {"btu_.us.txt": 14}
    assert "a character device behind a symbolic link" in rejected["null.us.txt"]
    assert "never opened" in rejected["null_data.csv"]


def test_socket_and_folder_links_are_rejected(tmp_path: Path) -> None:
    import socket

    shutil.copy(GOOD, tmp_path)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "s.us.txt"))
    (tmp_path / "loopdir").symlink_to(".")  # a folder link that loops
    (tmp_path / "dir.us.txt").symlink_to(".")
    try:
        got = listing(KaggleSource(tmp_path))
    finally:
        sock.close()
    assert got["btu_.us.txt"] is None
    assert "a socket" in (got["s.us.txt"] or "")
    assert "not followed" in (got["loopdir"] or "")
    assert "a folder behind a symbolic link" in (got["dir.us.txt"] or "")
    assert len(got) == 4  # the loop was not walked


def test_links_to_regular_files_are_followed(world_dir: Path) -> None:
    """Inside the folder, or out of it (a folder of links to a dataset kept elsewhere)."""
    root = world_dir / "in"
    (root / "sub").mkdir(parents=True)
    shutil.copy(GOOD, root / "sub")
    (root / "inside.us.txt").symlink_to("sub/btu_.us.txt")
    elsewhere = world_dir / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(GOOD2, elsewhere)
    (root / "outside.us.txt").symlink_to(elsewhere / "dcng.us.txt")
    src = KaggleSource(root)
    landed, rejected = ingest_like_the_pipeline(src)
    assert rejected == {}
    assert landed["inside.us.txt"] == landed["sub/btu_.us.txt"] == 14
    assert landed["outside.us.txt"] > 0
    table = src.read(next(u for u in src.units() if u.ref == "outside.us.txt"))
    assert set(table.column("symbol").to_pylist()) == {"OUTSIDE"}  # the link's name


def test_link_out_of_the_folder_to_a_non_kaggle_file_is_not_quoted(world_dir: Path) -> None:
    root = world_dir / "in"
    root.mkdir()
    shutil.copy(GOOD, root)
    secret = world_dir / "secret.txt"
    secret.write_text("root:TOPSECRET:19000:0:99999:7:::\n")
    (root / "shadow.us.txt").symlink_to(secret)
    (root / "shadow2.us.txt").symlink_to("/etc/shadow")
    landed, rejected = ingest_like_the_pipeline(KaggleSource(root))
    assert landed == {"btu_.us.txt": 14}
    assert "TOPSECRET" not in rejected["shadow.us.txt"]
    assert "not shown" in rejected["shadow.us.txt"]
    assert "shadow2.us.txt" in rejected  # whatever the reason, nothing of it is shown
    if os.access("/etc/shadow", os.R_OK):
        first = Path("/etc/shadow").read_text().splitlines()[0]
        assert first not in rejected["shadow2.us.txt"]


def test_unreadable_file_and_folder_as_another_user(world_dir: Path) -> None:
    root = world_dir / "in"
    (root / "locked").mkdir(parents=True)
    (root / "noexec").mkdir()
    shutil.copy(GOOD, root)
    shutil.copy(GOOD, root / "locked")
    shutil.copy(GOOD, root / "noexec")
    shutil.copy(GOOD, root / "unreadable.us.txt")
    (root / "README.md").write_text("not data\n")
    (root / "README.md").chmod(0)  # not data: never opened, so no error either
    (root / "unreadable.us.txt").chmod(0)
    (root / "locked").chmod(0)
    (root / "noexec").chmod(0o744)  # listable, but its entries cannot be examined
    got = units_as_other_user(root)
    assert got["btu_.us.txt"] is None
    assert "cannot read the file (Permission denied)" in (got["unreadable.us.txt"] or "")
    assert "cannot list this folder (Permission denied)" in (got["locked/"] or "")
    assert "cannot be examined (Permission denied)" in (got["noexec/btu_.us.txt"] or "")
    assert set(got) == {"btu_.us.txt", "unreadable.us.txt", "locked/", "noexec/btu_.us.txt"}


def test_unreadable_input_folder_is_a_clear_error(world_dir: Path) -> None:
    root = world_dir / "in"
    root.mkdir()
    shutil.copy(GOOD, root)
    root.chmod(0o711)
    got = subprocess.run(
        [
            *as_other_user(),
            sys.executable,
            "-c",
            "import sys; from stockbatch.sources.kaggle import KaggleSource\n"
            "try: list(KaggleSource(sys.argv[1]).units())\n"
            "except Exception as e: print(type(e).__name__, e)",
            str(root),
        ],
        env={**os.environ, "PYTHONPATH": str(SRC), "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "SourceError" in got.stdout and "cannot read the input folder" in got.stdout, got


def test_only_unreadable_folders_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a").mkdir()
    real_scandir = os.scandir

    def scandir(path: str | os.PathLike[str]) -> object:
        if Path(path).name == "a":
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(kaggle.os, "scandir", scandir)
    with pytest.raises(SourceError, match=r"found no Kaggle price file.*1 folder.*a/"):
        list(KaggleSource(tmp_path).units())


def test_names_with_control_characters_or_bad_bytes_are_rejected_escaped(tmp_path: Path) -> None:
    shutil.copy(GOOD, tmp_path)
    for raw in (b"new\nline.us.txt", b"esc\x1b[2J.us.txt", b"bad\xff.us.txt"):
        with open(os.path.join(os.fsencode(tmp_path), raw), "wb") as fh:
            fh.write(GOOD.read_bytes())
    landed, rejected = ingest_like_the_pipeline(KaggleSource(tmp_path))
    assert landed == {"btu_.us.txt": 14}
    assert set(rejected) == {"'new\\nline.us.txt'", "'esc\\x1b[2J.us.txt'", "'bad\\xff.us.txt'"}
    for error in rejected.values():
        assert error.isprintable() and "rename it" in error


def test_hidden_and_non_data_entries_stay_ignored(tmp_path: Path) -> None:
    shutil.copy(GOOD, tmp_path)
    os.mkfifo(tmp_path / ".hidden.us.txt")
    os.mkfifo(tmp_path / "notes.txt")
    (tmp_path / "dangling.md").symlink_to("nowhere")
    assert listing(KaggleSource(tmp_path)) == {"btu_.us.txt": None}


def test_entry_replaced_by_a_fifo_after_listing_is_not_opened(tmp_path: Path) -> None:
    shutil.copy(GOOD, tmp_path)
    src = KaggleSource(tmp_path)
    (unit,) = src.units()
    (tmp_path / "btu_.us.txt").unlink()
    os.mkfifo(tmp_path / "btu_.us.txt")
    with pytest.raises(SourceError, match="a FIFO"):
        src.read(unit)


def test_entry_replaced_by_a_link_after_listing_is_not_followed_blindly(tmp_path: Path) -> None:
    shutil.copy(GOOD, tmp_path)
    src = KaggleSource(tmp_path)
    (unit,) = src.units()
    (tmp_path / "btu_.us.txt").unlink()
    (tmp_path / "btu_.us.txt").symlink_to("/dev/null")
    with pytest.raises(SourceError, match="character device"):
        src.read(unit)


def test_metadata_that_cannot_be_read_is_rejected_and_instruments_still_work(
    tmp_path: Path,
) -> None:
    (tmp_path / "a").mkdir()
    shutil.copy(FIXTURES / "nasdaq" / "symbols_valid_meta.csv", tmp_path / "a")
    (tmp_path / "b").mkdir()
    os.mkfifo(tmp_path / "b" / "symbols_valid_meta.csv")
    shutil.copy(GOOD, tmp_path)
    src = KaggleSource(tmp_path)
    got = listing(src)
    assert set(got) == {"btu_.us.txt", "b/symbols_valid_meta.csv"}
    assert "a FIFO" in (got["b/symbols_valid_meta.csv"] or "")
    table = src.instruments()
    assert table is not None and table.num_rows == 262


def test_base_read_many_rejects_listed_errors_without_reading() -> None:
    class Dummy(Source):
        name = "dummy"

        def units(self, on_scan: object = None) -> Iterator[SourceUnit]:
            yield SourceUnit("dummy", "a", None, None, None, error="cannot list it")

        def read(self, unit: SourceUnit) -> pa.Table:
            raise AssertionError("never read")

    src = Dummy()
    ((_, outcome),) = src.read_many(list(src.units()))
    assert isinstance(outcome, SourceError) and str(outcome) == "a: cannot list it"


# -- huge trees: progress and an end -----------------------------------------------------


def test_scan_reports_progress_and_a_final_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kaggle, "SCAN_REPORT_EVERY", 3)
    for i in range(4):
        shutil.copy(GOOD, tmp_path / f"s{i}.us.txt")
    (tmp_path / "sub").mkdir()
    for i in range(3):
        (tmp_path / "sub" / f"note{i}.md").write_text("x")
    calls: list[tuple[int, int]] = []
    units = list(KaggleSource(tmp_path).units(on_scan=lambda n, found: calls.append((n, found))))
    assert len(units) == 4
    assert [n for n, _ in calls] == [3, 6, 8]  # every 3 entries, then the total once
    assert calls[-1] == (8, 4)  # 5 entries at the top, 3 in sub/
    assert [f for _, f in calls] == sorted(f for _, f in calls)


def test_scan_without_any_data_ends_after_the_limit(tmp_path: Path) -> None:
    for i in range(30):
        (tmp_path / f"junk{i}").mkdir()
        (tmp_path / f"junk{i}" / "x.md").write_text("x")
    with pytest.raises(SourceError, match="looked at 20 entries and found no Kaggle price file"):
        list(KaggleSource(tmp_path, scan_limit=20).units())


def test_scan_limit_does_not_stop_a_scan_that_found_data(tmp_path: Path) -> None:
    shutil.copy(GOOD, tmp_path / "a.us.txt")  # found first or not: the limit is 40
    (tmp_path / "z").mkdir()
    for i in range(50):
        (tmp_path / "z" / f"x{i}.md").write_text("x")
    shutil.copy(GOOD, tmp_path / "z" / "b.us.txt")
    got = listing(KaggleSource(tmp_path, scan_limit=40))
    assert got == {"a.us.txt": None, "z/b.us.txt": None}


def test_scan_never_follows_folder_links(tmp_path: Path) -> None:
    """A link cycle between folders (a -> b/ -> a) ends, each link rejected once."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "to_b").symlink_to(tmp_path / "b")
    (tmp_path / "b" / "to_a").symlink_to(tmp_path / "a")
    shutil.copy(GOOD, tmp_path / "a")
    got = listing(KaggleSource(tmp_path))
    assert set(got) == {"a/btu_.us.txt", "a/to_b", "b/to_a"}


# -- property: any folder, every entry named like data is accounted for once -----------

_KINDS = ("good", "bad_header", "empty", "dangling", "loop", "fifo", "devlink", "folderlink")
_NAME_CHARS = st.sampled_from(list("abz09_- é\u202e\x1b\n'\"%"))


@settings(
    max_examples=40,
    deadline=None,
    # No shrinking: a hang found once is reported at once, not re-run many times.
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    entries=st.lists(
        st.tuples(st.sampled_from(_KINDS), st.text(_NAME_CHARS, max_size=12), st.booleans()),
        max_size=10,
    )
)
def test_property_listing_never_hangs_or_drops_an_entry(
    entries: list[tuple[str, str, bool]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        expected_ok: set[str] = set()
        expected_bad: set[str] = set()
        for i, (kind, stem, nested) in enumerate(entries):
            folder = root / "sub" if nested else root
            folder.mkdir(exist_ok=True)
            name = f"{i}{stem}.us.txt"
            path = folder / name
            ref = f"sub/{name}" if nested else name
            shown = ref if ref.isprintable() else echo(ref)
            if kind == "good":
                shutil.copy(GOOD, path)
            elif kind == "bad_header":
                path.write_text("when,price\n2017-01-03,1\n")
            elif kind == "empty":
                path.write_bytes(b"")
            elif kind == "dangling":
                path.symlink_to(folder / "missing")
            elif kind == "loop":
                path.symlink_to(name)
            elif kind == "fifo":
                os.mkfifo(path)
            elif kind == "devlink":
                path.symlink_to("/dev/null")
            else:
                path.symlink_to(root)
            readable = kind in ("good", "bad_header", "empty") and ref.isprintable()
            (expected_ok if readable else expected_bad).add(shown)
        src = KaggleSource(root)
        with hang_guard(10):
            units = list(src.units())
        assert [u.ref for u in units] == sorted(expected_ok | expected_bad)
        assert {u.ref for u in units if u.error is None} == expected_ok
        for unit in units:
            assert unit.ref.isprintable()
            if unit.error is not None:
                assert unit.error.isprintable()
                with hang_guard(10), pytest.raises(SourceError):
                    src.read(unit)
