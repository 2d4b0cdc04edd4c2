"""The daily update of a live index: upsert the documents that changed, delete the ones
that left gold, instead of rebuilding the index.

What the live index holds is remembered next to the lake, one file per dataset
(:class:`Loaded`: the index name, its content hash, and per source part — a gold file,
or the whole dataset — its checksum and the ``(_id, hash)`` of each document). The
next sync reads only the parts whose checksum changed, hashes their documents and
compares: a new id or a changed hash is upserted (``index`` by the same ``_id``),
an id no part holds any more is deleted.

The record is trusted only when it describes the index the alias points at now, with
the same content hash in the index's ``_meta``, the same template version and the same
document count; anything else (another home loaded the alias, a mapping change, a lost
record, documents deleted by hand, another Polars version whose hashes differ) makes
the caller rebuild the index with an alias swap, as ``--force`` does. While the
upserts run, readers see the index partly updated (never missing documents that stay);
the swap is kept for rebuilds, where the whole index changes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import polars as pl

ID_HASH_SCHEMA = {"part": pl.String, "_id": pl.String, "h": pl.UInt64}


def doc_hashes(part: str, docs: pl.DataFrame) -> pl.DataFrame:
    """``(part, _id, h)`` of serialised documents (``_id`` and ``doc`` columns): ``h`` is
    Polars' 64-bit hash of the document's JSON (stable within one Polars version, which
    the record keeps)."""
    return docs.select(
        pl.lit(part, dtype=pl.String).alias("part"),
        pl.col("_id"),
        pl.col("doc").hash(seed=0).alias("h"),
    )


@dataclass
class Loaded:
    """What one dataset's live index holds, as the last successful sync left it."""

    index: str
    fingerprint: str
    parts: dict[str, str]
    """Source part -> its checksum when loaded."""
    docs: pl.DataFrame
    """``part``, ``_id``, ``h``: one row per document in the index."""
    polars: str = pl.__version__

    def usable_for(self, index: str, meta: dict[str, object], count: int) -> bool:
        """True when this record describes ``index`` as it is now (see the module doc)."""
        return (
            self.index == index
            and self.polars == pl.__version__
            and meta.get("fingerprint") == self.fingerprint
            and count == self.docs.height
        )


def read_loaded(path: Path) -> Loaded | None:
    """The record at ``path``; None when missing or unreadable (then: rebuild)."""
    try:
        info = json.loads(pl.read_parquet_metadata(path)["stockbatch"])
        frame = pl.read_parquet(path, columns=list(ID_HASH_SCHEMA))
    except (OSError, KeyError, ValueError, pl.exceptions.PolarsError):
        return None
    if frame.schema != pl.Schema(ID_HASH_SCHEMA):
        return None
    return Loaded(
        index=str(info["index"]),
        fingerprint=str(info["fingerprint"]),
        parts={str(k): str(v) for k, v in info["parts"].items()},
        docs=frame,
        polars=str(info["polars"]),
    )


def write_loaded(path: Path, loaded: Loaded) -> None:
    """Write the record atomically (a crash leaves the old one or none, never half)."""
    info = {
        "index": loaded.index,
        "fingerprint": loaded.fingerprint,
        "parts": loaded.parts,
        "polars": loaded.polars,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # lz4 and no statistics: written once per sync, read once by the next; speed over size.
    loaded.docs.select(list(ID_HASH_SCHEMA)).write_parquet(
        tmp, compression="lz4", statistics=False, metadata={"stockbatch": json.dumps(info)}
    )
    os.replace(tmp, path)


def forget(path: Path) -> None:
    """Drop the record (the next sync rebuilds)."""
    path.unlink(missing_ok=True)


@dataclass
class Delta:
    """What an update has to send: documents to upsert and ids to delete."""

    upserts: list[pl.DataFrame]
    """Serialised documents (``_id``, ``action``, ``doc``) whose id is new or changed."""
    deletes: pl.Series
    """Ids in the index that no part holds any more."""
    docs: pl.DataFrame
    """The record's ``(part, _id, h)`` after the update."""

    @property
    def upserted(self) -> int:
        """Documents to upsert."""
        return sum(f.height for f in self.upserts)


def diff(loaded: Loaded, unchanged: list[str], changed: dict[str, pl.DataFrame]) -> Delta:
    """The update from ``loaded`` to: the ``unchanged`` parts as recorded plus the
    ``changed`` parts' documents (part -> frame of ``_id``, ``action``, ``doc``)."""
    same = pl.col("part").is_in(unchanged)
    kept = loaded.docs.filter(same)
    fresh = [doc_hashes(part, docs) for part, docs in changed.items()]
    after = pl.concat([kept, *fresh]) if fresh else kept
    # Only documents of parts that changed or left can change or go: an id of an
    # unchanged part is in `after` as it was (a second part holding the same id would
    # break the count check). So the comparison costs what changed, not the index.
    before = loaded.docs.filter(~same).select("_id", "h")
    fresh_all = pl.concat(fresh) if fresh else pl.DataFrame(schema=ID_HASH_SCHEMA)
    upserts = []
    for docs, hashes in zip(changed.values(), fresh, strict=True):
        new = hashes.join(before, on=["_id", "h"], how="anti").select("_id")
        if new.height:
            upserts.append(docs.join(new, on="_id", how="semi"))
    gone = before.select("_id").join(fresh_all.select("_id"), on="_id", how="anti")["_id"]
    return Delta(upserts=upserts, deletes=gone, docs=after)
