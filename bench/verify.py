"""What checking the cache on read costs: per-tile crc32 on first read against a shard's sha256 per job.

In one run, on one shard of random tiles written in the cache's own layout (``files.TILES_SHARD``):
- read every tile once with the check (a fresh ``open_tiles``: each tile's crc32 on first read);
- read every tile again (checked already: the cost of a second epoch);
- read every tile without any check (the mapping alone);
- sha256 of the shard file (what a per-job digest check would cost), and crc32 / sha256 of the
  same bytes in memory.
Times are the best of ``--repeat``; the shard is in the page cache (a warm read), where the check
is most visible.

Run: python bench/verify.py --size 2048 --tiles 64
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

from mammoscale import cache, files
from mammoscale.preprocess.tiles import gather_index


def _best(repeat: int, work) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def _write_shard(root: Path, size: int, n: int) -> None:
    tiles = np.random.default_rng(0).integers(0, 256, (n, size, size), dtype=np.uint8)
    npy = files.under(root, files.TILES_SHARD, image_size=size, shard="0000")
    csv = files.under(root, files.TILES_INDEX, image_size=size, shard="0000")
    npy.parent.mkdir(parents=True)
    np.save(npy, tiles)
    rows = [
        {"breast_id": f"{i}_L", "patient_id": i, "laterality": "L", "label": 0, "split": "train", "shard": 0,
         "file": npy.name, "offset": i, "crc32": files.crc32(tiles[i])}
        for i in range(n)
    ]  # fmt: skip
    frame = files.TILE_TABLE.frame(rows)
    frame["shard_sha256"] = files.sha256_file(npy)
    files.TILE_TABLE.write(frame, csv)
    gather_index([csv], files.under(root, files.TILE_INDEX, image_size=size), [npy])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--tiles", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _write_shard(root, args.size, args.tiles)
        npy = files.under(root, files.TILES_SHARD, image_size=args.size, shard="0000")
        gib = args.tiles * args.size**2 / 2**30

        def read_all(tiles):
            for i in range(len(tiles)):
                np.asarray(tiles[i]).sum(dtype=np.uint64)  # touch every byte, as a batch copy would

        first = _best(args.repeat, lambda: read_all(cache.open_tiles(root, args.size)))
        warm = cache.open_tiles(root, args.size)
        read_all(warm)
        again = _best(args.repeat, lambda: read_all(warm))
        plain = np.load(npy, mmap_mode="r")
        unchecked = _best(args.repeat, lambda: [plain[i].sum(dtype=np.uint64) for i in range(len(plain))])
        digest = _best(args.repeat, lambda: files.sha256_file(npy))
        data = np.load(npy)
        crc = _best(args.repeat, lambda: [zlib.crc32(data[i].data) for i in range(len(data))])
        sha = _best(args.repeat, lambda: [hashlib.sha256(data[i].data).digest() for i in range(len(data))])
    print(f"{args.tiles} tiles of {args.size} x {args.size} ({gib:.2f} GiB), best of {args.repeat}")
    print("| read | seconds | GiB/s | vs unchecked |\n|---|---|---|---|")
    for name, seconds in (
        ("every tile, first read (crc32 checked)", first),
        ("every tile, second read (checked already)", again),
        ("every tile, no check (memory map alone)", unchecked),
        ("sha256 of the shard file (a per-job digest)", digest),
        ("crc32 of the bytes in memory", crc),
        ("sha256 of the bytes in memory", sha),
    ):
        print(f"| {name} | {seconds:.3f} | {gib / seconds:.2f} | {seconds / unchecked:.2f}x |")


if __name__ == "__main__":
    main()
