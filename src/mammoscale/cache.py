"""The tile cache: random access to the tiles of one image size, their checks, and staging to scratch.

The contract between preprocessing (which writes it) and training (which reads it). Layout
under ``cache.root`` (default ``results/cache``; the templates are :mod:`mammoscale.files`'s)::

    views/shard0007.npy          uint8 (n, 2, C, C/2): a shard's canonical CC and MLO views at
                                 C = cache.canonical_size, top-left aligned, zero padded
    views/shard0007.csv          one row per breast: offset, the views' real shapes, crc32 ...
    views/shard0007.images.csv   one row per image: decode report, decoder, flip check, ROI, or error
    img512/shard0007.npy         uint8 (n, 512, 512): tiles (CC | MLO) of the shard's breasts
    img512/shard0007.csv         one row per tile: offset, crc32 of the tile, sha256 of the file
    img512/index.csv             every shard's rows: what open_tiles reads
    img512/index.json            the index's sha256, rows and breasts per split: checked before it is read

A ChestX-ray14 cache has no views: each ``img<S>/shard*.npy`` holds a shard's images, one tile each
(:mod:`mammoscale.preprocess.chestxray14`), and its index one row per image with a 0/1 column per
finding (``files.CHEST_TILE_TABLE``). Both kinds of index are read here alike: a header names its
kind (``files.tile_table``), and the first column names a tile's example (a breast, an image).

Every file is written to a temporary name in the same directory and renamed into place only
when complete, so a half-written file is never read under its real name. Each tile row holds
the crc32 of the tile's bytes and the sha256 of its shard file. Reading checks each tile's crc32
the first time a process reads it (about 6 GiB/s, against 1.8 GiB/s for sha256, and only the
tiles a job reads; ``bench/README.md``), so an altered tile is never trained on; staging to
scratch and ``open_tiles(verify=True)`` check whole files by sha256. The index itself is checked
against ``index.json`` (its sha256, rows and breasts per split) before it is parsed: an index cut
short or missing rows is refused, never trained on.

Every error names the file and the command that rebuilds it. ``snakemake cache`` alone does not
rebuild a damaged or deleted file under a newer index (Snakemake does not regenerate an intermediate
file whose consumers are up to date), so the commands force the rule that writes it.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from mammoscale import files
from mammoscale.errors import UserError

log = logging.getLogger(__name__)


class CacheError(UserError, RuntimeError):
    """The cache is missing, incomplete or corrupt; the message says which file and how."""


BUILD = "snakemake cache"
"""What to run when a size's index is not there: the cache, built where it is missing."""
REBUILD_TILES = "snakemake cache --forcerun cache_tiles"
"""What to run when a tile shard is missing or no longer matches its index: stage 2 again, from the views.
(The target comes first: ``--forcerun`` takes every word after it as a rule to force.)"""
REBUILD_VIEWS = "snakemake cache --forcerun cache_views"
"""What to run when a views shard no longer matches its index: stage 1 again, from the DICOM files."""
REBUILD_INDEX = "snakemake cache --forcerun cache_index"
"""What to run when a size's index is damaged or does not match its check: the index again, from the shards."""


# reading


class Tiles(Sequence):
    """Random access to the S x S tiles of one image size, memory-mapped shard by shard.

    ``tiles[i]`` is a read-only uint8 (S, S) array backed by the shard file (nothing is
    loaded until touched); ``tiles.index`` has one row per tile, in the same order.
    """

    def __init__(self, directory: Path, image_size: int, index: pd.DataFrame):
        self.directory = directory
        self.image_size = image_size
        self.index = index.reset_index(drop=True)
        self._maps: dict[str, np.ndarray] = {}
        self._file = self.index["file"].to_numpy()
        self._offset = self.index["offset"].to_numpy()
        self._crc32 = self.index["crc32"].to_numpy(dtype=np.int64)
        self._verified = np.zeros(len(self.index), dtype=bool)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if not -len(self) <= i < len(self):
            raise IndexError(f"tile {i} out of range for {len(self)} tiles")
        i = int(i) % len(self)
        tile = self._map(self._file[i])[self._offset[i]]
        if not self._verified[i]:  # a tile's crc32 is checked when this process first reads it
            if files.crc32(tile) != self._crc32[i]:
                raise CacheError(
                    f"{self.directory / self._file[i]}: tile {self._offset[i]} ({self.index.columns[0]} "
                    f"{self.index.iat[i, 0]}) does not match its crc32: the file changed after it was "
                    f"written. Rebuild the tiles: {REBUILD_TILES}"
                )
            self._verified[i] = True
        return tile

    def _map(self, name: str) -> np.ndarray:
        if name not in self._maps:
            path = self.directory / name
            if not path.is_file():
                raise CacheError(
                    f"{path} is missing: the cache for {files.size_label(self.image_size)} is incomplete. "
                    f"Rebuild the tiles: {REBUILD_TILES}"
                )
            try:
                array = np.load(path, mmap_mode="r")
            except (ValueError, OSError, EOFError) as exc:
                raise CacheError(f"{path} is unreadable ({exc}): rebuild the tiles: {REBUILD_TILES}") from None
            expected = (self.image_size, self.image_size)
            needed = int(self.index.loc[self.index["file"] == name, "offset"].max()) + 1
            if array.dtype != np.uint8 or array.shape[1:] != expected or array.shape[0] < needed:
                raise CacheError(
                    f"{path} holds {array.dtype} {array.shape}; the index needs >= {needed} tiles of {expected}"
                )
            self._maps[name] = array
        return self._maps[name]

    def verify(self) -> None:
        """Check every shard file against the sha256 in the index; raise CacheError on the first mismatch."""
        for name, expected in self.index.groupby("file")["shard_sha256"].first().items():
            actual = files.sha256_file(self.directory / name)
            if actual != expected:
                raise CacheError(
                    f"{self.directory / name}: sha256 {actual[:12]}... does not match the index ({expected[:12]}...): "
                    f"the file changed after it was written. Rebuild the tiles: {REBUILD_TILES}"
                )


def open_tiles(cache_root: Path | str, image_size: int, *, verify: bool = False) -> Tiles:
    """Open the tiles of ``image_size`` under ``cache_root`` (see the module docstring for the layout)."""
    index_path = files.under(cache_root, files.TILE_INDEX, image_size=image_size)
    if not index_path.is_file():
        raise CacheError(f"{index_path} not found: build the cache for {files.size_label(image_size)} first: {BUILD}")
    index = read_index(index_path, files.under(cache_root, files.TILE_INDEX_CHECK, image_size=image_size))
    tiles = Tiles(index_path.parent, image_size, index)
    if verify:
        tiles.verify()
    return tiles


# the index and its check


def write_index(index: pd.DataFrame, index_csv: Path | str, check_json: Path | str) -> None:
    """Write a size's index (either kind: ``files.tile_table``) and then its check (sha256 of the index's bytes,
    rows, examples per split)."""
    files.tile_table(index.columns).write(index, index_csv)
    files.write_json({"sha256": files.sha256_file(index_csv), "rows": len(index), "splits": _splits(index)}, check_json)


def read_index(index_csv: Path | str, check_json: Path | str) -> pd.DataFrame:
    """A size's index, read only once its bytes match its check: an index cut short, edited or missing rows
    is refused in one line naming the command that rebuilds it."""
    index_csv = Path(index_csv)
    rebuild = f"Rebuild the index: {REBUILD_INDEX}"
    try:
        check = files.read_json(check_json)
        expected = check["sha256"], int(check["rows"]), dict(check["splits"])
    except FileNotFoundError:
        raise CacheError(f"{check_json} not found: {index_csv} cannot be checked. {rebuild}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise CacheError(f"{check_json} is unreadable ({type(exc).__name__}: {exc}). {rebuild}") from None
    actual = files.sha256_file(index_csv)
    if actual != expected[0]:
        raise CacheError(
            f"{index_csv}: sha256 {actual[:12]}... is not the {str(expected[0])[:12]}... recorded in {check_json}: "
            f"the index was cut short or edited after it was written. {rebuild}"
        )
    try:
        table = files.tile_table(pd.read_csv(index_csv, nrows=0).columns) or files.TILE_TABLE
        index = table.read(index_csv)
    except (ValueError, pd.errors.ParserError) as exc:  # the bytes are the ones written: a bug, said as such
        raise CacheError(f"{index_csv} cannot be parsed ({str(exc).splitlines()[0]}). {rebuild}") from None
    missing = table.missing(index)
    if missing:
        raise CacheError(f"{index_csv} lacks column(s) {', '.join(missing)}. {rebuild}")
    if (len(index), _splits(index)) != expected[1:]:
        raise CacheError(
            f"{index_csv} holds {len(index)} tiles {_splits(index)}; {check_json} says {expected[1]} "
            f"{expected[2]}. {rebuild}"
        )
    return index


def _splits(index: pd.DataFrame) -> dict[str, int]:
    return {split: int((index["split"] == split).sum()) for split in files.SPLITS}


# staging to node-local scratch


def stage(cache_root: Path | str, image_size: int, scratch: Path | str) -> Path:
    """Copy one image size's cache to ``scratch`` once, verified, and return the cache root there.

    Safe for several processes on a node at once (a file lock: the first copies, the others
    wait and reuse). A copy is reused when its index matches the source's index; every file
    is checked against its sha256 as it is copied. Returns a root for :func:`open_tiles`.
    """
    source_index = files.under(cache_root, files.TILE_INDEX, image_size=image_size)
    source = source_index.parent
    if not source_index.is_file():
        raise CacheError(f"{source_index} not found: build the cache for {files.size_label(image_size)} first: {BUILD}")
    source_check = files.under(cache_root, files.TILE_INDEX_CHECK, image_size=image_size)
    index = read_index(source_index, source_check)
    key = hashlib.sha256(str(Path(cache_root).resolve()).encode()).hexdigest()[:12]
    staged_root = files.under(scratch, files.STAGED, key=key)
    target = files.under(staged_root, files.TILE_INDEX, image_size=image_size).parent
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{files.size_label(image_size)}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if all(
            (target / path.name).is_file() and (target / path.name).read_bytes() == path.read_bytes()
            for path in (source_index, source_check)
        ):
            log.info("cache for img%d already staged at %s", image_size, target)
            return staged_root
        shutil.rmtree(target, ignore_errors=True)
        partial = target.with_name(f".{target.name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        total = 0
        for name, expected in index.groupby("file")["shard_sha256"].first().items():
            total += _copy_verified(source / name, partial / name, expected)
        for name in (source_index.name, source_check.name):
            shutil.copyfile(source / name, partial / name)
        os.replace(partial, target)
        log.info("staged %d tiles of img%d (%.1f MB) to %s", len(index), image_size, total / 1e6, target)
    return staged_root


def _copy_verified(src: Path, dst: Path, expected: str, chunk: int = 1 << 22) -> int:
    digest, size = hashlib.sha256(), 0
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        while block := fin.read(chunk):
            digest.update(block)
            fout.write(block)
            size += len(block)
    if digest.hexdigest() != expected:
        raise CacheError(
            f"{src}: sha256 {digest.hexdigest()[:12]}... does not match the index ({expected[:12]}...); "
            f"the source cache changed after it was written. Rebuild the tiles: {REBUILD_TILES}"
        )
    return size
