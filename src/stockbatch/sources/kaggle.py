"""The Kaggle stock datasets: three CSV layouts, one file per symbol.

- ``kaggle-huge``: "Huge Stock Market Dataset", ``aapl.us.txt``,
  ``Date,Open,High,Low,Close,Volume,OpenInt`` (already adjusted);
- ``kaggle-sp500``: "S&P 500 stock data" (5 years), ``AAPL_data.csv``,
  ``date,open,high,low,close,volume,Name``;
- ``kaggle-nasdaq``: "Stock Market Dataset" (NASDAQ), ``AAPL.csv``,
  ``Date,Open,High,Low,Close,Adj Close,Volume``.

``KaggleSource(root)`` walks ``root`` recursively (sorted, hidden files and
folders skipped) and lists every file whose name fits a layout; a directory
may mix layouts. Each file's layout is detected from its header and must agree
with its name, which gives the symbol (see ``symbols.py``). Other files
(READMEs, checksums, ...) are ignored, and so are ``symbols_valid_meta.csv``
(metadata, read by ``instruments()``) and ``all_stocks_5yr.csv`` (the S&P set's
merge of its per-symbol files: reading both would ingest every row twice).

Hostile or broken entries never stop, hang or silently shrink the listing. A file
named like data is opened only after ``lstat``/``stat`` show it is a regular file
(opened non-blocking, without following a last-moment link, and checked again
with ``fstat``); anything else named like data is listed as a unit with
``error`` set, so the ingest rejects it *by name* with the reason and goes on:
a FIFO, socket or device (also behind a link: a link to ``/dev/zero`` is never
opened), a folder reached through a link, a broken link, a link loop, a file
that cannot be read (permissions), a name with control characters or bytes that
are not UTF-8 (its ref is then shown escaped). A sub-folder that cannot be
listed is rejected by name too (``sub/``), and so is a link to a folder not
named like data: links to folders are never followed, so a scan cannot loop.

Symbolic links to regular files are followed, wherever they point: a folder of
links to the files of a dataset kept elsewhere is a supported way to ingest a
subset. The content of a file reached through a link that *leaves* the input
folder is never quoted: when it is not a Kaggle file it is rejected by name
with no echo of its first line (a link to ``/etc/shadow`` shows nothing of it).
Any quote of input in a message (a header, a file name, a link target) is
escaped and cut to ``base.ECHO_LIMIT`` characters (``base.echo``).

A scan that has looked at ``scan_limit`` entries (100,000 by default) without
finding one file named like data stops with an error (``--path /`` ends
quickly); ``units(on_scan=...)`` reports its progress (``base.ScanProgress``).

Listing only ``stat``s a file (size, ``mtime_ns``); ``read_versions`` then reads
each file against its landed version, skipping an unchanged one and reading
only the appended bytes of a grown one (:mod:`stockbatch.sources.versions`).

Parsing (the layouts, one bronze row per line): :mod:`stockbatch.sources.kaggle_parse`.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv

from stockbatch.schema import INSTRUMENTS
from stockbatch.sources.base import (
    SCAN_REPORT_EVERY,
    ScanProgress,
    Source,
    SourceError,
    SourceName,
    SourceUnit,
    echo,
)
from stockbatch.sources.kaggle_parse import parse_kaggle_bytes, parse_kaggle_lines
from stockbatch.sources.symbols import canonical_symbol, kaggle_layout_of
from stockbatch.sources.versions import Prior, UnitVersion, read_version

METADATA_FILE = "symbols_valid_meta.csv"
SKIPPED_FILES = frozenset({METADATA_FILE, "all_stocks_5yr.csv"})
"""File names never read as price files (compared case-insensitively)."""

KAGGLE_DATASETS: dict[str, str] = {
    "kaggle-huge": "borismarjanovic/price-volume-data-for-all-us-stocks-etfs",
    "kaggle-sp500": "camnugent/sandp500",
    "kaggle-nasdaq": "jacksoncrow/stock-market-dataset",
}
"""Kaggle slugs of the three datasets, for ``kaggle_download``."""

SCAN_LIMIT = 100_000
"""Entries a scan looks at before giving up when none of them is named like data."""


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


class _Refused(Exception):
    """An entry that is not opened (or could not be): ``message`` says why."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a file")


def _strerror(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NONBLOCK", 0)  # a FIFO swapped in after the check cannot block
    | getattr(os, "O_NOFOLLOW", 0)  # nor can a link swapped in after the check
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_CLOEXEC", 0)
)


def _open_regular(path: Path, root_real: str) -> tuple[int, bool]:
    """Open a file named like data, checking it first: (fd, inside the root).

    Only a regular file is ever opened: ``lstat``, then ``stat`` through a link,
    then ``fstat`` on the descriptor. ``inside`` is False when a link leads out of
    ``root_real`` (its content must then never be quoted). Raises ``_Refused``.
    """
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise _Refused(
            f"cannot be examined ({_strerror(exc)}): make its folder readable "
            "(chmod a+rx) or remove it."
        ) from exc
    target = str(path)
    inside = True
    if stat.S_ISLNK(st.st_mode):
        try:
            st = os.stat(path)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _Refused("a symbolic link loop: fix or remove the link.") from exc
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                try:
                    to = echo(os.readlink(path))
                except OSError:
                    to = "its target"
                raise _Refused(
                    f"a broken symbolic link ({to} does not exist): fix or remove the link."
                ) from exc
            raise _Refused(
                f"cannot follow the symbolic link ({_strerror(exc)}): fix or remove the link."
            ) from exc
        target = os.path.realpath(path)
        inside = _within(target, root_real)
    if not stat.S_ISREG(st.st_mode):
        via = " behind a symbolic link" if target != str(path) else ""
        raise _Refused(
            f"not a regular file ({_kind(st.st_mode)}{via}): never opened; "
            "remove it from the input folder."
        )
    try:
        fd = os.open(target, _OPEN_FLAGS)
    except OSError as exc:
        raise _Refused(
            f"cannot read the file ({_strerror(exc)}): make it readable or remove it."
        ) from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced between the checks and the open
        os.close(fd)
        raise _Refused("the entry changed while it was listed: run the ingest again.")
    return fd, inside


@dataclass
class _Listing:
    """What one scan of the root found."""

    units: list[SourceUnit] = field(default_factory=list)
    metadata: list[tuple[str, Path]] = field(default_factory=list)
    """(ref, path) of every readable metadata file, sorted by ref."""
    entries: int = 0
    found: int = 0
    """Entries named like data (price files and metadata), readable or not."""


class KaggleSource(Source):
    """Every Kaggle price file under ``root`` (the three layouts, possibly mixed)."""

    name = "kaggle"

    def __init__(self, root: Path, *, scan_limit: int = SCAN_LIMIT) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise SourceError(
                "the Kaggle input folder does not exist: download a dataset "
                "(`kaggle_download`) or point the ingest at the folder holding its files.",
                ref=str(self.root),
            )
        self.scan_limit = scan_limit
        self._root_real = os.path.realpath(self.root)
        self._instruments: list[pa.Table] | None = None  # from the last units()

    def describe(self) -> str:
        """``folder <root>``."""
        return f"folder {self.root}"

    def _scan(self, on_scan: ScanProgress | None = None) -> _Listing:
        """Walk the root (links to folders are not followed); see the module docstring."""
        out = _Listing()
        found: list[SourceUnit] = []
        bad_folders: list[SourceUnit] = []
        stack: list[tuple[Path, str]] = [(self.root, "")]
        while stack:
            folder, prefix = stack.pop()
            try:
                with os.scandir(folder) as it:
                    children = list(it)
            except OSError as exc:
                if not prefix:
                    raise SourceError(
                        f"cannot read the input folder ({_strerror(exc)}): make it readable "
                        "by the user running the ingest.",
                        ref=str(self.root),
                    ) from exc
                bad_folders.append(
                    _rejected(
                        self.name,
                        _shown_ref(prefix),
                        f"cannot list this folder ({_strerror(exc)}): none of its files were "
                        "read; make it readable (chmod a+rx) or move it out of the input folder.",
                    )
                )
                continue
            for entry in children:
                out.entries += 1
                if on_scan is not None and out.entries % SCAN_REPORT_EVERY == 0:
                    on_scan(out.entries, out.found)
                if not out.found and out.entries >= self.scan_limit:
                    raise SourceError(
                        f"looked at {out.entries:,} entries and found no Kaggle price file "
                        "(*.us.txt, *_data.csv, *.csv): point --path at the dataset's folder.",
                        ref=str(self.root),
                    )
                if _is_hidden(entry.name):
                    continue
                unit = self._entry(entry, prefix + entry.name, stack, out)
                if unit is not None:
                    found.append(unit)
        if on_scan is not None:
            on_scan(out.entries, out.found)
        if not out.found and bad_folders:
            first = bad_folders[0]
            raise SourceError(
                f"found no Kaggle price file, and {len(bad_folders)} folder(s) could not be "
                f"read: {first.ref} {first.error}",
                ref=str(self.root),
            )
        out.units = sorted(found + bad_folders, key=lambda u: u.ref)
        out.metadata.sort()
        return out

    def _entry(
        self, entry: os.DirEntry[str], ref: str, stack: list[tuple[Path, str]], out: _Listing
    ) -> SourceUnit | None:
        """The unit for one directory entry (maybe a rejected one), or None to ignore it."""
        path = Path(entry.path)
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
            is_link = entry.is_symlink()
        except OSError:
            is_dir = is_link = False
        if is_dir:
            stack.append((path, ref + "/"))
            return None
        layout = kaggle_layout_of(entry.name)
        if layout is None:
            if is_link and _is_folder(path):
                return _rejected(
                    self.name,
                    _shown_ref(ref),
                    "a symbolic link to a folder: not followed (links could loop); "
                    "ingest that folder with its own --path, or copy it in.",
                )
            return None  # not data: READMEs, checksums, ...
        lower = entry.name.lower()
        if lower in SKIPPED_FILES and lower != METADATA_FILE:
            return None
        out.found += 1
        if not ref.isprintable():
            return _rejected(
                layout,
                _shown_ref(ref),
                "the name has control characters or bytes that are not UTF-8: rename it.",
            )
        try:
            fd, _ = _open_regular(path, self._root_real)
        except _Refused as exc:
            return _rejected(layout, ref, exc.message)
        if lower == METADATA_FILE:  # read and parsed by units(): small
            os.close(fd)
            out.metadata.append((ref, path))
            return None
        # Listing only stats the file (no read): the ingest compares size and mtime
        # with the landed version's fingerprint and reads what it must (versions.py).
        try:
            st = os.fstat(fd)
        except OSError as exc:
            return _rejected(layout, ref, f"cannot read the file ({_strerror(exc)}).")
        finally:
            os.close(fd)
        return SourceUnit(
            source=layout, ref=ref, path=path, sha256=None, size=st.st_size, mtime_ns=st.st_mtime_ns
        )

    def units(self, on_scan: ScanProgress | None = None) -> Iterator[SourceUnit]:
        """One unit per file named like data, sorted by ref; unreadable ones with ``error``.

        The layout (``source``) comes from the name. A folder that cannot be listed
        is a unit too (``sub/``, source ``kaggle``, with ``error``), and so is a
        NASDAQ metadata file that cannot be read or parsed (it is read here, so that
        ``instruments()`` cannot fail later). ``on_scan`` gets the scan's progress.
        """
        listing = self._scan(on_scan)
        tables: list[pa.Table] = []
        bad_metadata: list[SourceUnit] = []
        for ref, path in listing.metadata:
            try:
                tables.append(self._metadata(ref, path))
            except SourceError as exc:
                bad_metadata.append(_rejected("kaggle-nasdaq", ref, exc.message))
        self._instruments = tables
        yield from sorted(listing.units + bad_metadata, key=lambda u: u.ref)

    def read_many(
        self, units: list[SourceUnit]
    ) -> Iterator[tuple[SourceUnit, pa.Table | SourceError]]:
        """Read files whole on a small thread pool, in order (see ``read_versions``)."""
        for unit, outcome in self.read_versions([(u, None) for u in units]):
            yield unit, outcome if isinstance(outcome, SourceError) else _table(outcome)

    def read_versions(
        self,
        jobs: list[tuple[SourceUnit, Prior | None]],
        *,
        tail: bool = True,
        verify: bool = False,
        force: bool = False,
    ) -> Iterator[tuple[SourceUnit, UnitVersion | SourceError]]:
        """Read files against their landed versions on a small thread pool, in order,
        a bounded amount ahead (``read_version`` for each).

        Parsing runs in Arrow and Polars, and hashing in hashlib, which release the
        GIL, so two cores read two files at once. Files go to the pool in small
        batches (up to ``BATCH_FILES`` files or ``BATCH_BYTES`` of file size), since
        a skipped or appended file takes less time than handing it to a thread; at
        most ``2 * workers`` batches wait in memory for the consumer.
        """
        workers = max(1, min(4, os.cpu_count() or 1))
        Outcome = UnitVersion | SourceError

        def attempt(batch: list[tuple[SourceUnit, Prior | None]]) -> list[Outcome]:
            out: list[UnitVersion | SourceError] = []
            for unit, prior in batch:
                try:
                    out.append(
                        self.read_version(unit, prior, tail=tail, verify=verify, force=force)
                    )
                except SourceError as exc:
                    out.append(exc)
            return out

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kaggle-read") as pool:
            pending: deque[tuple[list[SourceUnit], Future[list[Outcome]]]] = deque()
            for batch in _batches(jobs):
                pending.append(([unit for unit, _ in batch], pool.submit(attempt, batch)))
                if len(pending) >= 2 * workers:
                    units, future = pending.popleft()
                    yield from zip(units, future.result(), strict=True)
            while pending:
                units, future = pending.popleft()
                yield from zip(units, future.result(), strict=True)

    def read_version(
        self,
        unit: SourceUnit,
        prior: Prior | None,
        *,
        tail: bool = True,
        verify: bool = False,
        force: bool = False,
    ) -> UnitVersion:
        """Read one file against its landed version (``versions.read_version``): skip it,
        parse only its appended lines, or parse it whole.

        The file is opened once, checked like the scan checks it, and must still
        have the size and mtime listing saw, before and after the read (a file
        being written is refused, to be read whole by the next run).
        """
        if unit.error is not None:
            raise SourceError(unit.error, ref=unit.ref)
        if unit.path is None:
            raise SourceError("a Kaggle unit needs a path", ref=unit.ref)
        path = unit.path
        try:
            fd, inside = _open_regular(path, self._root_real)
        except _Refused as exc:
            raise SourceError(exc.message, ref=unit.ref) from None
        changed = SourceError(
            "the file changed between listing and reading: run the ingest again once "
            "nothing is writing to the input folder.",
            ref=unit.ref,
        )

        def parse(data: bytes) -> pa.Table:
            return parse_kaggle_bytes(data, file_name=path.name, ref=unit.ref, quote=inside)

        def parse_tail(data: bytes, first_line_no: int) -> pa.Table:
            return parse_kaggle_lines(
                data,
                source=cast(SourceName, unit.source),
                file_name=path.name,
                ref=unit.ref,
                first_line_no=first_line_no,
            )

        def read_at(offset: int, length: int) -> bytes:
            return _pread_all(fd, length, offset)

        try:
            st = os.fstat(fd)
            seen = (st.st_size, st.st_mtime_ns)
            if unit.size is not None and seen != (unit.size, unit.mtime_ns or st.st_mtime_ns):
                raise changed
            version = read_version(
                read_at, st.st_size, st.st_mtime_ns, prior, parse, parse_tail,
                tail=tail, verify=verify, force=force,
            )  # fmt: skip
            st = os.fstat(fd)
            if (st.st_size, st.st_mtime_ns) != seen:
                raise changed
            return version
        except OSError as exc:
            raise SourceError(
                f"cannot read the file ({_strerror(exc)}): check it still exists and "
                "is readable, then run the ingest again.",
                ref=unit.ref,
            ) from exc
        finally:
            os.close(fd)

    def _read_bytes(self, path: Path, ref: str) -> tuple[bytes, bool]:
        """(the file's bytes, inside the root), checked like the scan checks it."""
        try:
            fd, inside = _open_regular(path, self._root_real)
        except _Refused as exc:
            raise SourceError(exc.message, ref=ref) from None
        try:
            with os.fdopen(fd, "rb") as fh:
                return fh.read(), inside
        except OSError as exc:
            raise SourceError(
                f"cannot read the file ({_strerror(exc)}): check it still exists and "
                "is readable, then run the ingest again.",
                ref=ref,
            ) from exc

    def read(self, unit: SourceUnit) -> pa.Table:
        """Parse one file whole (see the module docstring); one file in memory at a time."""
        return _table(self.read_version(unit, None))

    def _metadata(self, ref: str, path: Path) -> pa.Table:
        data, inside = self._read_bytes(path, ref)
        return _read_metadata(data, ref, quote=inside)

    def instruments(self) -> pa.Table | None:
        """Instruments from every ``symbols_valid_meta.csv`` under the root, else None.

        name = Security Name, exchange = Listing Exchange (NASDAQ's one-letter code:
        N, Q, P, A, Z), is_etf = (ETF == "Y"); the symbol follows ``canonical_symbol``.
        The first file (sorted by path) wins when two list the same symbol. After
        ``units()`` these are the files it read (a bad one was listed as rejected);
        without it, the root is scanned here and a bad file raises ``SourceError``.
        """
        tables = self._instruments
        if tables is None:
            tables = [self._metadata(ref, path) for ref, path in self._scan().metadata]
        if not tables:
            return None
        out = pl.from_arrow(pa.concat_tables(tables))
        assert isinstance(out, pl.DataFrame)
        return out.unique("symbol", keep="first", maintain_order=True).to_arrow().cast(INSTRUMENTS)


BATCH_FILES = 32
BATCH_BYTES = 1 << 20


def _batches(
    jobs: list[tuple[SourceUnit, Prior | None]],
) -> Iterator[list[tuple[SourceUnit, Prior | None]]]:
    """``jobs`` in order, cut in batches of at most ``BATCH_FILES`` files and (a single
    larger file aside) ``BATCH_BYTES`` of file size."""
    batch: list[tuple[SourceUnit, Prior | None]] = []
    size = 0
    for job in jobs:
        n = job[0].size or 0
        if batch and (len(batch) >= BATCH_FILES or size + n > BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(job)
        size += n
    if batch:
        yield batch


def _table(version: UnitVersion) -> pa.Table:
    """The rows of a version read whole (never ``unchanged``: it had no prior)."""
    assert version.table is not None
    return version.table


def _pread_all(fd: int, length: int, offset: int) -> bytes:
    """``length`` bytes at ``offset`` (fewer only at the end of the file)."""
    chunks: list[bytes] = []
    while length > 0:
        chunk = os.pread(fd, min(length, 1 << 24), offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
        length -= len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)  # b"" when none


def _rejected(source: str, ref: str, error: str) -> SourceUnit:
    """A listed unit that cannot be read: the ingest rejects it by name."""
    return SourceUnit(source=source, ref=ref, path=None, sha256=None, size=None, error=error)


def _shown_ref(ref: str) -> str:
    """The ref itself, or escaped when it holds control characters or invalid bytes."""
    return ref if ref.isprintable() else echo(ref)


def _is_folder(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except OSError:
        return False


_META_COLUMNS = ("Symbol", "Security Name", "Listing Exchange", "ETF")


def _read_metadata(data: bytes, ref: str, *, quote: bool = True) -> pa.Table:
    try:
        raw = pacsv.read_csv(
            pa.py_buffer(data),
            convert_options=pacsv.ConvertOptions(
                include_columns=list(_META_COLUMNS),
                column_types=dict.fromkeys(_META_COLUMNS, pa.string()),
                strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, KeyError, OSError) as exc:
        # Arrow's message quotes the offending row: cut and escaped, or left out.
        why = echo(str(exc)) if quote else type(exc).__name__
        raise SourceError(
            f"cannot read the NASDAQ metadata ({why}); it needs the columns "
            f"{', '.join(_META_COLUMNS)}. Replace it with the file from the Kaggle dataset.",
            ref=ref,
        ) from exc
    df = pl.from_arrow(raw)
    assert isinstance(df, pl.DataFrame)
    # One definition of the symbol rule: apply it in Python (a few thousand rows).
    symbols = pl.Series([canonical_symbol(s) for s in df.get_column("Symbol").to_list()])

    def text(col: str) -> pl.Expr:
        value = pl.col(col).str.strip_chars()
        return pl.when(value != "").then(value)

    out = df.select(
        pl.lit(symbols).alias("symbol"),
        text("Security Name").alias("name"),
        text("Listing Exchange").alias("exchange"),
        (pl.col("ETF").str.strip_chars() == "Y").alias("is_etf"),
        pl.lit("kaggle-nasdaq").alias("source"),
    ).filter(pl.col("symbol") != "")
    return out.to_arrow().cast(INSTRUMENTS)


def kaggle_download(slug: str) -> Path:
    """Download (or reuse kagglehub's cached copy of) a Kaggle dataset; returns its folder.

    ``slug`` is ``owner/dataset`` (see ``KAGGLE_DATASETS``). Needs the network and,
    for most datasets, Kaggle credentials.
    """
    ref = f"kaggle:{slug}"
    try:
        import kagglehub
    except ImportError as exc:  # it is a dependency, but a trimmed install may lack it
        raise SourceError(
            "kagglehub is not installed: `pip install kagglehub`, or download the "
            "dataset by hand and pass its folder.",
            ref=ref,
        ) from exc
    try:
        return Path(kagglehub.dataset_download(slug))
    except Exception as exc:  # kagglehub raises many types (HTTP, auth, OS)
        raise SourceError(
            f"could not download the Kaggle dataset ({type(exc).__name__}: "
            f"{echo(str(exc), quote=False)}). "
            "Check the network and the slug (owner/dataset); log in with Kaggle "
            "credentials (~/.kaggle/kaggle.json or KAGGLE_USERNAME/KAGGLE_KEY); or "
            "download it by hand and pass its folder as the input root.",
            ref=ref,
        ) from exc
