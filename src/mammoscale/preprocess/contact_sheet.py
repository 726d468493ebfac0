"""A contact sheet of random tiles with their labels: crops, flips and tiling at a glance.

Positive breasts are rare (about 2% in the RSNA set), so up to half of the sheet is drawn
from them when there are any; the rest are random negatives. Seeded: the same cache gives
the same sheet.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mammoscale import files
from mammoscale.cache import open_tiles

log = logging.getLogger(__name__)

CAPTION = 18
GAP = 4


def choose(labels: np.ndarray, n: int, *, seed: int) -> list[int]:
    """Indices of up to ``n`` tiles: up to half positives, the rest negatives (then whatever is left)."""
    rng = np.random.default_rng(seed)
    positives = rng.permutation(np.flatnonzero(labels == 1))
    negatives = rng.permutation(np.flatnonzero(labels != 1))
    take_pos = min(len(positives), n // 2)
    take_neg = min(len(negatives), n - take_pos)
    take_pos = min(len(positives), n - take_neg)
    return sorted(positives[:take_pos].tolist() + negatives[:take_neg].tolist())


def draw(
    cache_root: Path | str, image_size: int, out_png: Path | str, *, n: int = 16, cell: int = 256, seed: int = 0
) -> int:
    """Write a grid of ``n`` random tiles of ``image_size``, each captioned "breast_id  label  split"."""
    tiles = open_tiles(cache_root, image_size)
    chosen = choose(tiles.index["label"].to_numpy(), n, seed=seed)
    side = min(cell, image_size)
    cols = max(1, min(4, len(chosen)))
    rows = max(1, math.ceil(len(chosen) / cols))
    sheet = Image.new("L", (cols * (side + GAP) + GAP, rows * (side + CAPTION + GAP) + GAP), 40)
    pen = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=12)
    for k, i in enumerate(chosen):
        r, c = divmod(k, cols)
        x, y = GAP + c * (side + GAP), GAP + r * (side + CAPTION + GAP)
        thumb = Image.fromarray(np.asarray(tiles[i])).resize((side, side), Image.Resampling.BOX)
        sheet.paste(thumb, (x, y))
        meta = tiles.index.iloc[i]
        pen.text(
            (x + 2, y + side + 2),
            f"{meta['breast_id']}  label {meta['label']}  {meta['split']}",
            fill=255 if meta["label"] == 1 else 190,
            font=font,
        )
    if not chosen:
        pen.text((GAP, GAP), f"no tiles in the {files.size_label(image_size)} cache", fill=255, font=font)
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_png)
    log.info("%s: %d of %d tiles", out_png, len(chosen), len(tiles))
    return len(chosen)
