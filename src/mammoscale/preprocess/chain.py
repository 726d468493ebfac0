"""The whole preprocessing chain in one process, for tests, benchmarks and notebooks.

The workflow runs these same steps as separate jobs (``rules/dataset.smk``, ``rules/preprocess.smk``);
:func:`build_cache` calls the same functions, with the same configuration keys and defaults, and
writes the same files in the same places under its working directory.
"""

from __future__ import annotations

from pathlib import Path

from mammoscale import config as configuration
from mammoscale import files
from mammoscale.dataset import manifest
from mammoscale.preprocess.summary import summarise
from mammoscale.preprocess.tiles import build_tiles, gather_index
from mammoscale.preprocess.views import ViewSettings, build_views


def build_cache(data_root: Path | str, workdir: Path | str, *, config: dict | None = None, workers: int = 1) -> Path:
    """Manifest, stage 1, QC summary, stage 2 and index of ``data_root`` under ``workdir``; the cache root.

    ``config`` is a partial configuration over the defaults (``grid.image_sizes``, ``cache.*``,
    ``manifest.*``, ``preprocess.*``, ``decode.*`` are read), e.g.
    ``{"grid": {"image_sizes": [64, 128]}, "cache": {"shards": 2}}``.
    """
    cfg = configuration.with_defaults(config or {})
    workdir = Path(workdir)
    sizes = sorted(cfg["grid"]["image_sizes"])
    n_shards = cfg["cache"]["shards"]
    breasts_csv = workdir / files.BREASTS
    manifest.main(
        data_root,
        breasts_csv,
        workdir / files.EXCLUDED,
        workdir / files.MANIFEST_COUNTS,
        split_fractions=cfg["manifest"]["split"],
        seed=cfg["manifest"]["seed"],
        n_shards=n_shards,
    )
    root = workdir / cfg["cache"]["root"]
    settings = ViewSettings.from_config(cfg, cfg["cache"]["canonical_size"] or sizes[-1])
    shards = files.shard_names(n_shards)
    for shard in shards:
        _build_shard(data_root, breasts_csv, root, shard, sizes, settings, workers)
    summarise(
        [files.under(root, files.VIEWS_IMAGES, shard=shard) for shard in shards],
        workdir / files.EXCLUDED,
        workdir / files.DECODE_ERRORS,
        workdir / files.PREPROCESS_SUMMARY,
    )
    for size in sizes:
        gather_index(
            [files.under(root, files.TILES_INDEX, image_size=size, shard=shard) for shard in shards],
            files.under(root, files.TILE_INDEX, image_size=size),
            [files.under(root, files.TILES_SHARD, image_size=size, shard=shard) for shard in shards],
            files.under(root, files.TILE_INDEX_CHECK, image_size=size),
            breasts_csv=breasts_csv,
            decode_errors_csv=workdir / files.DECODE_ERRORS,
        )
    return root


def _build_shard(data_root, breasts_csv: Path, root: Path, shard: str, sizes: list[int], settings, workers: int):
    """Stage 1 of one shard, then its stage 2 at every size."""
    views = {
        kind: files.under(root, template, shard=shard)
        for kind, template in (("npy", files.VIEWS_SHARD), ("csv", files.VIEWS_INDEX), ("images", files.VIEWS_IMAGES))
    }
    build_views(
        data_root,
        breasts_csv,
        int(shard),
        views["npy"],
        views["csv"],
        views["images"],
        settings=settings,
        workers=workers,
    )
    for size in sizes:
        build_tiles(
            views["npy"],
            views["csv"],
            files.under(root, files.TILES_SHARD, image_size=size, shard=shard),
            files.under(root, files.TILES_INDEX, image_size=size, shard=shard),
            image_size=size,
            resample=settings.resample,
        )
