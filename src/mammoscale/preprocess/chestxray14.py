"""ChestX-ray14's PNGs to the tile cache, in the mammography tiles' format: one job per shard, one index per size.

A shard's job (:func:`build_shard`) decodes each of its images once (8-bit or 16-bit grey, RGB
or RGBA, palette: all become 8-bit grey, :func:`read_png`), fits it into an S x S square for each
image size S (resized with its aspect kept, centred, zero around a non-square image: NIH's are
square), and writes ``img<S>/shard*.npy`` and ``.csv`` as stage 2 of the mammography cache does,
one row per image with its fourteen findings (``files.CHEST_TILE_TABLE``). There is no stage of
canonical views: a PNG decodes in milliseconds, so a new size decodes again.

An image that will not decode is left out and recorded, never dropped silently: the shard's
``decoded/shard*.csv`` has a row for every image, decoded (its PNG mode and size) or its error
kind and message. :func:`summarise` gathers them into ``decode_errors.csv`` and the counts
(``preprocess_summary.json``, whose ``lost_fraction`` ``cache.max_failure_fraction`` limits), and
:func:`gather_index` checks every shard's sha256 (:func:`mammoscale.preprocess.tiles.read_shards`)
and refuses an index that does not hold each split's images of the manifest less those that failed
(:func:`~mammoscale.preprocess.tiles.check_splits`, the mammography index's own check).
"""

from __future__ import annotations

import contextlib
import logging
import math
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError

from mammoscale import config as configuration
from mammoscale import dicom, files, provenance
from mammoscale.cache import REBUILD_TILES, open_tiles, write_index
from mammoscale.dataset import chestxray14 as dataset
from mammoscale.logs import tell
from mammoscale.preprocess import contact_sheet, tiling
from mammoscale.preprocess.summary import check_failures, losses, lost_of
from mammoscale.preprocess.tiles import check_splits, read_shards
from mammoscale.tasks import FINDINGS

log = logging.getLogger(__name__)

SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I")
"""Pillow's modes of a 16-bit grey PNG: scaled to 8 bits (65535 -> 255)."""
TO_GREY = ("1", "P", "PA", "LA", "RGB", "RGBA", "RGBX")
"""Modes Pillow turns into 8-bit grey itself (ITU-R 601 luma; alpha dropped)."""
SHORT = {name: name[:4] for name in FINDINGS} | {
    "Pneumonia": "Pnmn",
    "Pneumothorax": "Ptx",
    "Pleural_Thickening": "PlTh",
}
"""A finding as a contact sheet's caption names it."""


class ImageError(Exception):
    """A PNG that cannot be turned into an image; ``kind`` names the reason in one word, as the DICOM errors do."""

    def __init__(self, kind: str, path: Path | str, message: str):
        self.kind, self.path, self.message = kind, str(path), message
        super().__init__(f"{path}: {message}")


# one image


def read_png(path: Path | str, *, max_pixels: int) -> tuple[np.ndarray, str]:
    """``path``'s pixels as 8-bit grey (rows, columns), and the PNG's mode; :class:`ImageError` when it cannot be."""
    problem = dicom.file_problem(path)  # what is there, examined, never opened
    if problem is not None:
        raise ImageError(problem.kind, path, problem.message)
    try:
        with Image.open(path) as picture:
            if picture.format != "PNG":
                raise ImageError("not_png", path, f"is a {picture.format} image, not a PNG")
            if picture.width * picture.height > max_pixels:
                raise ImageError(
                    "too_large", path, f"{picture.width} x {picture.height} is more than decode.max_pixels"
                )
            picture.load()
            return _grey(picture, path), picture.mode
    except UnidentifiedImageError:
        raise ImageError("not_png", path, "is not an image Pillow can read") from None
    except Image.DecompressionBombError as exc:
        raise ImageError("too_large", path, str(exc)) from None
    except (OSError, SyntaxError, ValueError, zlib.error) as exc:
        kind = "truncated" if "truncated" in str(exc) else "corrupt"
        raise ImageError(kind, path, f"{type(exc).__name__}: {exc}") from None


def _grey(picture: Image.Image, path: Path | str) -> np.ndarray:
    if picture.mode == "L":
        return np.asarray(picture)
    if picture.mode in SIXTEEN_BIT:
        values = np.clip(np.asarray(picture, dtype=np.int64), 0, 65535)
        return np.round(values / 257).astype(np.uint8)
    if picture.mode in TO_GREY:
        return np.asarray(picture.convert("L"))
    raise ImageError("unsupported_image", path, f"mode {picture.mode} is not grey, RGB or a palette")


def square(image: np.ndarray, size: int, method: str) -> np.ndarray:
    """``image`` fitted into a ``size`` x ``size`` uint8 square: its aspect kept, centred, zero around it."""
    rows, cols = tiling.fit(image.shape, (size, size))
    out = np.zeros((size, size), np.uint8)
    r0, c0 = (size - rows) // 2, (size - cols) // 2
    out[r0 : r0 + rows, c0 : c0 + cols] = tiling.resize(image, (rows, cols), method)
    return out


# one shard


def build_shard(
    data_root: Path | str,
    images_csv: Path | str,
    shard: int,
    cache_root: Path | str,
    *,
    image_sizes: list[int],
    resample: str,
    max_pixels: int,
) -> int:
    """Decode the shard's images once; write their tiles at every size and the shard's decode table. The tiles."""
    images = files.CHEST_IMAGE_TABLE.read(images_csv)
    images = images[images["shard"] == int(shard)].reset_index(drop=True)
    outputs = {size: files.under(cache_root, files.TILES_SHARD, image_size=size, shard=shard) for size in image_sizes}
    decoded, kept, crcs = [], [], {size: [] for size in image_sizes}
    with contextlib.ExitStack() as stack:
        arrays = {
            size: stack.enter_context(files.atomic_array(path, (len(images), size, size)))
            for size, path in outputs.items()
        }
        for i, row in enumerate(images.itertuples(index=False)):
            record = {"image_id": row.image_id, "patient_id": row.patient_id, "path": row.path}
            try:
                grey, mode = read_png(Path(data_root) / row.path, max_pixels=max_pixels)
            except ImageError as error:
                decoded.append({**record, "status": "error", "error_kind": error.kind, "message": error.message})
                continue
            for size, array in arrays.items():
                array[len(kept)] = square(grey, size, resample)
                crcs[size].append(files.crc32(array[len(kept)]))
            decoded.append({**record, "status": "ok", "mode": mode, "rows": grey.shape[0], "cols": grey.shape[1]})
            kept.append(i)
    rows = images.iloc[kept].reset_index(drop=True)
    for size, path in outputs.items():
        if len(kept) < len(images):  # the failed images' places, given back
            _shrink(path, len(kept))
        frame = rows.assign(file=path.name, offset=np.arange(len(rows)), crc32=crcs[size])
        frame["shard_sha256"] = files.sha256_file(path)
        files.CHEST_TILE_TABLE.write(frame, files.under(cache_root, files.TILES_INDEX, image_size=size, shard=shard))
    files.CHEST_DECODE_TABLE.write(
        files.CHEST_DECODE_TABLE.frame(decoded), files.under(cache_root, files.CHEST_DECODED, shard=shard)
    )
    log.info("shard %s: %d of %d images decoded, tiled at %s", shard, len(kept), len(images), image_sizes)
    return len(kept)


def _shrink(path: Path, n: int) -> None:
    source = np.load(path, mmap_mode="r")
    with files.atomic_array(path, (n, *source.shape[1:])) as array:
        array[:] = source[:n]


# every shard


def summarise(
    decoded_csvs: list[Path | str], excluded_csv: Path | str, decode_errors_csv: Path | str, summary_json: Path | str
) -> dict:
    """Every shard's decode table and the manifest's exclusions -> decode_errors.csv and the counts.

    An image is *lost* when its file is missing (the manifest's ``missing_file``) or it fails to decode;
    ``lost_fraction`` is what ``cache.max_failure_fraction`` limits (:func:`~mammoscale.preprocess.summary.
    check_failures`), as for mammograms. Whenever anything was lost, one line says so on standard error too.
    """
    images = pd.concat([files.CHEST_DECODE_TABLE.read(path) for path in decoded_csvs], ignore_index=True)
    excluded = files.CHEST_EXCLUDED_TABLE.read(excluded_csv)
    errors = images[images["status"] == "error"]
    files.CHEST_DECODE_ERROR_TABLE.write(errors.rename(columns={"path": "file"}), decode_errors_csv)
    ok = images[images["status"] == "ok"]
    summary = {
        **losses(images, excluded),
        "images_cached": int(len(ok)),
        "modes": dict(Counter(ok["mode"])),
        "versions": {**provenance.versions(provenance.PREPROCESSING_PACKAGES), **provenance.host()},
    }
    files.write_json(summary, summary_json)
    log.info("%d of %d images decoded (%s)", len(ok), len(images), summary["modes"])
    if summary["lost_images"]:
        tell(f"{lost_of(summary)}: see {decode_errors_csv} and {excluded_csv}")
    return summary


def gather_index(
    shard_csvs: list[Path | str],
    index_csv: Path | str,
    shard_npys: list[Path | str],
    check_json: Path | str,
    *,
    images_csv: Path | str,
    decode_errors_csv: Path | str,
) -> int:
    """Every shard's tile rows -> the size's index.csv and its check, once each split holds the manifest's images
    of that split less those that failed to decode, and no other (every shard's sha256 checked as it is written)."""
    index = read_shards(shard_csvs, shard_npys, files.CHEST_TILE_TABLE)
    images = files.CHEST_IMAGE_TABLE.read(images_csv, columns=("image_id", "split"))
    failed = files.CHEST_DECODE_ERROR_TABLE.read(decode_errors_csv)["image_id"]
    check_splits(index, images, failed, "image_id", manifest=images_csv, stage=("tiles", REBUILD_TILES))
    write_index(index, index_csv, check_json)
    return len(index)


# to look at


def draw_contact_sheet(
    cache_root: Path | str, image_size: int, out_png: Path | str, *, n: int = 16, cell: int = 256, seed: int = 0
) -> int:
    """A grid of ``n`` random tiles of ``image_size`` (up to half with a finding), each captioned with its image, its
    findings (:data:`SHORT`) and its split, ``cell`` pixels square whatever the size."""
    tiles = open_tiles(cache_root, image_size)
    chosen = contact_sheet.choose(tiles.index["label"].to_numpy(), n, seed=seed)
    side, gap, caption = cell, contact_sheet.GAP, contact_sheet.CAPTION
    cols = max(1, min(4, len(chosen)))
    rows = max(1, math.ceil(len(chosen) / cols))
    sheet = Image.new("L", (cols * (side + gap) + gap, rows * (side + caption + gap) + gap), 40)
    pen, font = ImageDraw.Draw(sheet), ImageFont.load_default(size=11)
    for k, i in enumerate(chosen):
        r, c = divmod(k, cols)
        x, y = gap + c * (side + gap), gap + r * (side + caption + gap)
        sheet.paste(Image.fromarray(np.asarray(tiles[i])).resize((side, side), Image.Resampling.BOX), (x, y))
        meta = tiles.index.iloc[i]
        found = "|".join(SHORT[name] for name in FINDINGS if meta[name] == 1) or "none"
        pen.text((x + 2, y + side + 2), f"{Path(meta['image_id']).stem}  {found}  {meta['split']}", fill=255, font=font)
    if not chosen:
        pen.text((gap, gap), f"no tiles in the {files.size_label(image_size)} cache", fill=255, font=font)
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    with files.atomic_path(out_png) as tmp:
        sheet.save(tmp, format="PNG")
    return len(chosen)


# in one process


def build_cache(data_root: Path | str, workdir: Path | str, *, config: dict | None = None) -> Path:
    """Manifest, shards, summary and indexes of the ChestX-ray14 directory ``data_root`` under ``workdir``, the jobs
    of ``rules/chestxray14.smk`` in one process, for tests and notebooks; the cache root.

    ``config`` is a partial configuration over the defaults (``grid.image_sizes``, ``cache.*``, ``manifest.*``,
    ``preprocess.resample``, ``decode.max_pixels`` are read).
    """
    cfg = configuration.with_defaults(config or {})
    workdir = Path(workdir)
    sizes, n_shards = sorted(cfg["grid"]["image_sizes"]), cfg["cache"]["shards"]
    images_csv, excluded_csv = workdir / files.CHEST_IMAGES, workdir / files.EXCLUDED
    dataset.main(
        data_root,
        images_csv,
        excluded_csv,
        workdir / files.MANIFEST_COUNTS,
        split_fractions=cfg["manifest"]["split"],
        seed=cfg["manifest"]["seed"],
        n_shards=n_shards,
    )
    root, shards = workdir / cfg["cache"]["root"], files.shard_names(n_shards)
    for shard in shards:
        build_shard(
            data_root,
            images_csv,
            int(shard),
            root,
            image_sizes=sizes,
            resample=cfg["preprocess"]["resample"],
            max_pixels=cfg["decode"]["max_pixels"],
        )
    errors_csv, summary_json = workdir / files.DECODE_ERRORS, workdir / files.PREPROCESS_SUMMARY
    summarise([files.under(root, files.CHEST_DECODED, shard=s) for s in shards], excluded_csv, errors_csv, summary_json)
    check_failures(summary_json, errors_csv, max_failure_fraction=cfg["cache"]["max_failure_fraction"])
    for size in sizes:
        gather_index(
            [files.under(root, files.TILES_INDEX, image_size=size, shard=s) for s in shards],
            files.under(root, files.TILE_INDEX, image_size=size),
            [files.under(root, files.TILES_SHARD, image_size=size, shard=s) for s in shards],
            files.under(root, files.TILE_INDEX_CHECK, image_size=size),
            images_csv=images_csv,
            decode_errors_csv=errors_csv,
        )
    return root
