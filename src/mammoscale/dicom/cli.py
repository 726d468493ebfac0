"""``mammoscale-decode FILE...``: decode files, print what was found, optionally save PNGs."""

from __future__ import annotations

import argparse
from pathlib import Path

from mammoscale.dicom.decode import decode_with_report
from mammoscale.dicom.errors import DicomError
from mammoscale.dicom.read import DEFAULT_MAX_PIXELS


def cli(argv: list[str] | None = None) -> int:
    """``mammoscale-decode FILE...``: decode files, print what was found, optionally save PNGs."""
    parser = argparse.ArgumentParser(prog="mammoscale-decode", description=cli.__doc__)
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--png-dir", type=Path, help="write each decoded image here as PNG")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS)
    args = parser.parse_args(argv)
    failed = 0
    for path in args.files:
        try:
            decoded = decode_with_report(path, max_pixels=args.max_pixels)
        except DicomError as exc:
            failed += 1
            print(f"{path}\tERROR {exc.kind}\t{exc.message}")
            continue
        r = decoded.report
        print(
            f"{path}\t{r.shape[0]}x{r.shape[1]}\t{r.photometric}\t{r.bits_stored} bits\t{r.voi}\t"
            f"{'; '.join(r.notes) or 'ok'}"
        )
        if args.png_dir:
            from PIL import Image

            args.png_dir.mkdir(parents=True, exist_ok=True)
            Image.fromarray(decoded.image).save(args.png_dir / f"{path.stem}.png")
    return 1 if failed else 0
