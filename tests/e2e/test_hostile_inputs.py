"""The real CLI (a subprocess) on input folders with hostile entries.

Issue "Hostile input and faults", items 3 and 8: one unreadable entry never aborts,
hangs or silently drops input (it is rejected by name with its reason, exit 3, the
good files are ingested), and no message or manifest quotes more than 100
characters of any input. Every CLI run has a timeout (a hang fails the test instead
of blocking it) and a memory cap (reading /dev/zero cannot take the machine down).
"""

from __future__ import annotations

import functools
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

DEMO_HUGE = Path(__file__).resolve().parents[2] / "data" / "demo" / "kaggle" / "huge"
GOOD_FILES = ("btu.us.txt", "btu_.us.txt", "evstc.us.txt")  # small real files (CC0 demo)
TIMEOUT_S = 120
MEMORY_CAP = 3 * 1024**3
MAX_LINE = 300
MAX_ECHO = 100
HUGE_HEADER = "Date,Open,High,Low,Close,Volume,OpenInt"

pytestmark = pytest.mark.timeout(600)


# -- harness ---------------------------------------------------------------------------


@dataclass
class Sandbox:
    """Everything one CLI run may see: input, home, its temp folder and working folder."""

    root: Path

    @property
    def input(self) -> Path:
        return self.root / "input"

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def cwd(self) -> Path:
        return self.root / "cwd"


@pytest.fixture()
def sandbox() -> Iterator[Sandbox]:
    with _sandbox() as box:
        yield box


class _sandbox:
    """A fresh sandbox in /tmp that the ``nobody`` user can enter (pytest's is private)."""

    def __enter__(self) -> Sandbox:
        root = Path(tempfile.mkdtemp(prefix="stockbatch-hostile-"))
        root.chmod(0o755)
        box = Sandbox(root)
        box.input.mkdir(mode=0o755)
        box.cwd.mkdir(mode=0o755)
        for writable in (box.home, box.tmp):
            writable.mkdir()
            writable.chmod(0o1777)
        self.box = box
        return box

    def __exit__(self, *exc: object) -> None:
        root = self.box.root
        for p in [root, *root.rglob("*")]:
            if not p.is_symlink() and p.is_dir():
                p.chmod(0o755)
        shutil.rmtree(root)


@functools.cache
def _drop_root() -> tuple[str, ...] | None:
    if shutil.which("setpriv"):
        prefix: tuple[str, ...] = ("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups")
    elif shutil.which("runuser"):
        prefix = ("runuser", "-u", "nobody", "--")
    else:
        return None
    probe = subprocess.run(
        [*prefix, sys.executable, "-c", "import stockbatch.cli"],
        capture_output=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    return prefix if probe.returncode == 0 else None


def other_user() -> list[str]:
    """The command prefix that runs a command as ``nobody`` (tests run as root)."""
    if os.geteuid() != 0:
        return []
    prefix = _drop_root()
    if prefix is None:
        pytest.skip("needs setpriv or runuser, and a Python that nobody may run")
    return list(prefix)


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def stockbatch(
    box: Sandbox, *args: str, as_other_user: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run ``stockbatch ARGS`` in the sandbox; a hang fails the test after TIMEOUT_S."""
    env = {
        **os.environ,
        "HOME": str(box.home),
        "TMPDIR": str(box.tmp),
        "STOCKBATCH_HOME": str(box.home),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    env.pop("STOCKBATCH_DEBUG", None)
    prefix = other_user() if as_other_user else []
    try:
        return subprocess.run(
            [*prefix, sys.executable, "-m", "stockbatch.cli", *args],
            cwd=box.cwd,
            env=env,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=TIMEOUT_S,
            preexec_fn=_cap_memory,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(
            f"stockbatch {' '.join(args)} still running after {TIMEOUT_S}s: an entry "
            f"blocked it (a FIFO or a device opened?). Output so far: {exc.stderr!r:.500}"
        )


def ingest(box: Sandbox, *, as_other_user: bool = False) -> subprocess.CompletedProcess[str]:
    return stockbatch(
        box,
        "ingest",
        "--source",
        "kaggle",
        "--path",
        str(box.input),
        "--home",
        str(box.home),
        "-q",
        as_other_user=as_other_user,
    )


def manifest(box: Sandbox) -> tuple[dict, str]:
    """The run's manifest (parsed, and as text)."""
    (path,) = sorted((box.home / "lake" / "runs").glob("*.json"))
    text = path.read_text()
    return json.loads(text), text


def data_rows(data: bytes) -> int:
    """Non-blank lines after the header (independent of the code under test)."""
    lines = [ln for ln in data.replace(b"\r\n", b"\n").split(b"\n") if ln.strip()]
    return max(len(lines) - 1, 0)


def assert_short_lines(output: str) -> None:
    for line in output.splitlines():
        assert len(line) <= MAX_LINE, f"an output line of {len(line)} chars: {line[:200]!r}..."


def assert_not_echoed(content: str, *haystacks: str) -> None:
    """No run of more than MAX_ECHO characters of ``content`` appears in the haystacks."""
    for hay in haystacks:
        flat = hay.replace("\n", "")
        for i in range(len(content) - MAX_ECHO):
            window = content[i : i + MAX_ECHO + 1]
            assert window not in flat, f"{MAX_ECHO + 1} chars of hostile input echoed at {i}"


# -- the hostile folder ----------------------------------------------------------------

# A 10 MB first line that is not periodic within 20,000 chars, so any 101-char window
# of it is one of those checked by assert_not_echoed.
_RNG = random.Random(7)
_PATTERN = "".join(_RNG.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(20_000))
LONG_LINE = (_PATTERN * 500)[:10_000_000]


def _unreadable_file(box: Sandbox, path: Path) -> None:
    shutil.copy(DEMO_HUGE / "btu.us.txt", path)
    path.chmod(0)


def _unreadable_folder(box: Sandbox, path: Path) -> None:
    path.mkdir()
    shutil.copy(DEMO_HUGE / "btu.us.txt", path / "hidden_rows.us.txt")
    path.chmod(0)


HOSTILE: dict[str, Callable[[Sandbox, Path], object]] = {
    "dangling.us.txt": lambda box, p: p.symlink_to(box.input / "gone.us.txt"),
    "loop.us.txt": lambda box, p: p.symlink_to(p.name),
    "unreadable.us.txt": _unreadable_file,
    "locked/": _unreadable_folder,
    "fifo.us.txt": lambda box, p: os.mkfifo(p),
    "zero.us.txt": lambda box, p: p.symlink_to("/dev/zero"),
    "long.us.txt": lambda box, p: p.write_text(LONG_LINE + "\n2017-01-03,1,2,1,1,5,0\n"),
    "shadow.us.txt": lambda box, p: p.symlink_to("/etc/shadow"),
    "dirloop": lambda box, p: p.symlink_to("."),
}
"""Each hostile entry (its ref) and how to make it in the input folder."""

# What each rejection must say, per user running the CLI.
REJECTED_ALWAYS = {
    "dangling.us.txt": "broken symbolic link",
    "loop.us.txt": "symbolic link loop",
    "fifo.us.txt": "not a regular file (a FIFO)",
    "zero.us.txt": "not a regular file (a character device behind a symbolic link)",
    "long.us.txt": "matches no Kaggle layout",
    "dirloop": "not followed",
}
REJECTED_AS_OTHER_USER = {
    **REJECTED_ALWAYS,
    "unreadable.us.txt": "cannot read the file (Permission denied)",
    "locked/": "cannot list this folder (Permission denied)",
    "shadow.us.txt": "cannot read the file (Permission denied)",
}
REJECTED_AS_ROOT = {**REJECTED_ALWAYS, "shadow.us.txt": "not shown"}
"""As root the unreadable file and folder can be read: they are landed."""

GOOD = {name: DEMO_HUGE / name for name in GOOD_FILES}


def add_good_files(box: Sandbox) -> None:
    for name in GOOD_FILES:
        shutil.copy(DEMO_HUGE / name, box.input / name)


def check_run(
    box: Sandbox,
    res: subprocess.CompletedProcess[str],
    rejected: dict[str, str],
    landed: dict[str, Path],
) -> None:
    """Exit 3; the good files landed whole; each bad entry rejected by name with its
    reason; short output lines; no more than MAX_ECHO chars of hostile input anywhere."""
    output = res.stdout + res.stderr
    assert res.returncode == 3, output[:3000]
    assert "Traceback" not in output
    doc, text = manifest(box)
    assert doc["status"] == "partial"
    ing = doc["ingest"]
    got_rejected = {r["ref"]: r["error"] for r in ing["rejected"]}
    assert set(got_rejected) == set(rejected)
    for ref, reason in rejected.items():
        assert reason in got_rejected[ref], (ref, got_rejected[ref])
        assert f"rejected {ref}: " in res.stderr  # listed by name on the terminal too
    got_landed = {u["ref"]: u["rows"] for u in ing["units"]}
    assert got_landed == {ref: data_rows(p.read_bytes()) for ref, p in landed.items()}
    assert ing["rows"] == sum(got_landed.values())
    assert ing["units_seen"] == ing["units_ingested"] + ing["units_skipped"] + len(got_rejected)

    assert_short_lines(output)
    assert_not_echoed(LONG_LINE[: len(_PATTERN) + MAX_ECHO + 1], output, text)
    if os.access("/etc/shadow", os.R_OK):
        for line in Path("/etc/shadow").read_text().splitlines():
            if len(line) >= 8:
                assert line not in output and line not in text


@pytest.mark.parametrize("ref", list(HOSTILE))
def test_one_hostile_entry_is_rejected_by_name_and_the_rest_goes_on(
    sandbox: Sandbox, ref: str
) -> None:
    """Good files plus one hostile entry, read as ``nobody`` (the /etc/shadow link as
    root, so that it could be read and echoed)."""
    as_root = ref == "shadow.us.txt" and os.geteuid() == 0
    add_good_files(sandbox)
    HOSTILE[ref](sandbox, sandbox.input / ref)
    res = ingest(sandbox, as_other_user=not as_root)
    expected = (REJECTED_AS_ROOT if as_root else REJECTED_AS_OTHER_USER)[ref]
    check_run(sandbox, res, {ref: expected}, GOOD)


def build_hostile_folder(box: Sandbox) -> None:
    """Good files (one in a sub-folder, one by a link out of the folder) and every
    hostile entry."""
    add_good_files(box)
    (box.input / "sub").mkdir()
    shutil.copy(DEMO_HUGE / "btu.us.txt", box.input / "sub" / "inner.us.txt")
    outside = box.root / "elsewhere"
    outside.mkdir()
    shutil.copy(DEMO_HUGE / "btu.us.txt", outside / "kept.us.txt")
    (box.input / "outlink.us.txt").symlink_to(outside / "kept.us.txt")  # followed
    for ref, make in HOSTILE.items():
        make(box, box.input / ref)


LANDED_ALWAYS = {
    **GOOD,
    "sub/inner.us.txt": DEMO_HUGE / "btu.us.txt",
    "outlink.us.txt": DEMO_HUGE / "btu.us.txt",
}
LANDED_AS_ROOT = {
    **LANDED_ALWAYS,
    "unreadable.us.txt": DEMO_HUGE / "btu.us.txt",
    "locked/hidden_rows.us.txt": DEMO_HUGE / "btu.us.txt",
}


@pytest.mark.parametrize("user", ["nobody", "root"])
def test_hostile_folder_is_ingested_with_each_bad_entry_rejected_by_name(
    sandbox: Sandbox, user: str
) -> None:
    if user == "root" and os.geteuid() != 0:
        pytest.skip("the root case needs root")
    build_hostile_folder(sandbox)
    res = ingest(sandbox, as_other_user=user == "nobody")
    if user == "nobody":
        check_run(sandbox, res, REJECTED_AS_OTHER_USER, LANDED_ALWAYS)
    else:
        check_run(sandbox, res, REJECTED_AS_ROOT, LANDED_AS_ROOT)


def test_rerun_rejects_the_same_entries_again(sandbox: Sandbox) -> None:
    """A rejected entry is never remembered as seen: the next run lists it again."""
    build_hostile_folder(sandbox)
    first = ingest(sandbox, as_other_user=True)
    assert first.returncode == 3, first.stderr[:3000]
    second = ingest(sandbox, as_other_user=True)
    assert second.returncode == 3, second.stderr[:3000]
    docs = [json.loads(p.read_text()) for p in (sandbox.home / "lake" / "runs").glob("*.json")]
    (rerun,) = [d for d in docs if d["ingest"]["units_skipped"]]
    assert rerun["ingest"]["units_ingested"] == 0
    assert {r["ref"] for r in rerun["ingest"]["rejected"]} == set(REJECTED_AS_OTHER_USER)


def test_only_unreadable_entries_is_not_a_silent_success(sandbox: Sandbox) -> None:
    (sandbox.input / "locked").mkdir()
    shutil.copy(DEMO_HUGE / "btu.us.txt", sandbox.input / "locked")
    (sandbox.input / "locked").chmod(0)
    res = ingest(sandbox, as_other_user=True)
    assert res.returncode == 1, res.stderr
    assert "locked/" in res.stderr and "Permission denied" in res.stderr
    assert "Traceback" not in res.stderr


def test_markup_in_a_rejected_header_is_printed_as_text(sandbox: Sandbox) -> None:
    shutil.copy(DEMO_HUGE / "btu_.us.txt", sandbox.input)
    (sandbox.input / "x.us.txt").write_text("[/]when[bold],price\n1,2\n")
    res = ingest(sandbox)
    assert res.returncode == 3, res.stderr
    assert "[/]when[bold]" in res.stderr


# -- property: any folder ends with a clear exit code and counts that reconcile --------

_NAME_CHARS = st.sampled_from(list("abz09_- .é'\"%\u202e\x1b\n[]"))
_KINDS = (
    "good",
    "good",
    "sp500",
    "empty",
    "header_only",
    "bad_header",
    "not_data",
    "dangling",
    "loop",
    "fifo",
    "folder_link",
)
SP500 = (
    b"date,open,high,low,close,volume,Name\n"
    b"2013-02-08,1,2,0.5,1.5,10,X\n"
    b"2013-02-11,1,2,0.5,1.5,10,X\n"
)


def _snapshot(root: Path, skip: Path) -> dict[str, tuple[int, int, int]]:
    """(mode, size, mtime) of every entry under root but ``skip``, links not followed."""
    out: dict[str, tuple[int, int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if Path(dirpath, d) != skip]
        for name in [*dirnames, *filenames]:
            st_ = os.lstat(os.path.join(dirpath, name))
            out[os.path.relpath(os.path.join(dirpath, name), root)] = (
                st_.st_mode,
                st_.st_size,
                st_.st_mtime_ns,
            )
    return out


@settings(
    max_examples=15,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # no shrinking: a CLI run is ~3 s
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    entries=st.lists(
        st.tuples(
            st.sampled_from(_KINDS),
            st.text(_NAME_CHARS, max_size=16),
            st.sampled_from(["", "sub/", "sub/deeper/"]),
            st.sampled_from(GOOD_FILES),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_property_any_folder_ends_clearly_and_reconciles(
    entries: list[tuple[str, str, str, str]],
) -> None:
    entries = [("good", "first", "", GOOD_FILES[1]), *entries]  # always something to land
    with _sandbox() as box:
        landed: dict[str, int] = {}
        rejected: list[str] = []
        for i, (kind, stem, folder, good) in enumerate(entries):
            (box.input / folder).mkdir(parents=True, exist_ok=True)
            suffix = {"sp500": "_data.csv", "not_data": ".md", "folder_link": ""}.get(
                kind, ".us.txt"
            )
            name = f"{i}{stem}{suffix}"  # the index keeps names distinct and not hidden
            path = box.input / folder / name
            ref = folder + name
            content: bytes | None = None
            if kind == "good":
                content = (DEMO_HUGE / good).read_bytes()
            elif kind == "sp500":
                content = SP500
            elif kind == "empty":
                content = b""
            elif kind == "header_only":
                content = HUGE_HEADER.encode() + b"\n"
            elif kind in ("bad_header", "not_data"):
                content = b"when,price\n2017-01-03,1\n"
            elif kind == "dangling":
                path.symlink_to(box.input / "missing")
            elif kind == "loop":
                path.symlink_to(name)
            elif kind == "fifo":
                os.mkfifo(path)
            else:  # a link to a folder (here: a loop back to the input folder)
                path.symlink_to(box.input)
            if content is not None:
                path.write_bytes(content)
            if kind == "not_data":
                continue
            if not ref.isprintable():
                ref = "escaped"  # listed as an escaped ref: counted below, not compared
            if content is not None and kind != "bad_header" and ref != "escaped":
                landed[ref] = data_rows(content)
            else:
                rejected.append(ref)
        before = _snapshot(box.root, skip=box.home)

        res = ingest(box)

        output = res.stdout + res.stderr
        assert res.returncode == (3 if rejected else 0), output[:3000]
        assert "Traceback" not in output
        assert_short_lines(output)
        doc, _ = manifest(box)
        ing = doc["ingest"]
        assert ing["units_seen"] == ing["units_ingested"] + ing["units_skipped"] + len(
            ing["rejected"]
        )
        assert ing["units_skipped"] == 0
        assert {u["ref"]: u["rows"] for u in ing["units"]} == landed
        assert ing["rows"] == sum(landed.values())
        # A ref with control characters is listed escaped: compare the printable ones,
        # and count the rest.
        got_rejected = [r["ref"] for r in ing["rejected"]]
        assert all(r.isprintable() for r in got_rejected)
        assert sorted(r for r in got_rejected if not r.startswith("'")) == sorted(
            r for r in rejected if r != "escaped"
        )
        assert len(got_rejected) == len(rejected)
        assert _snapshot(box.root, skip=box.home) == before  # nothing else was touched
        assert not any(box.tmp.iterdir()) and not any(box.cwd.iterdir())
