"""Choosing the full-resolution decoder, JPEG Lossless (SV1) and JPEG 2000: speed, correctness, damage.

Half of the RSNA set is JPEG Lossless SV1, which has no resolution levels: there the decoder is the
only choice. This script makes SV1 files of a real mammogram size from synthetic native ones
(python-gdcm transcodes them: none of the candidates but GDCM encodes SV1), then, on the same
files in one run:
- decodes each with every candidate installed: pylibjpeg-libjpeg and python-gdcm through pydicom's
  plugins, dicomsdl and imagecodecs (``ljpeg_decode``) on their own; best of ``--repeat``, on one
  core (stage 1 runs a decoding process per core: a decoder must not win by using more threads);
- checks each result against the native file's stored values (exact: the codec is lossless);
- decodes each file cut to 60 % and with noise over its middle, in a child process, and says
  whether the candidate raised, returned an image (silent damage) or crashed the process.

The candidates that are not installed are skipped (bench-only dependencies:
``pip install python-gdcm dicomsdl imagecodecs``).

With ``--syntax j2k`` the same for JPEG 2000 Lossless files (encoded by pydicom with
pylibjpeg-openjpeg), among pydicom's plugins and imagecodecs' ``jpeg2k_decode``.

Run: python bench/jpeg_lossless.py --shape 2776x2082 --images 4 [--syntax j2k]
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pydicom
from pydicom.encaps import encapsulate, generate_fragments
from pydicom.pixels import get_decoder
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, JPEGLosslessSV1

from mammoscale import synthetic


def _frame(ds) -> bytes:
    fragments = list(generate_fragments(ds.PixelData))
    return b"".join(fragments[1:])


def _via_pydicom(plugin):
    def decode(data: bytes) -> np.ndarray:
        ds = pydicom.dcmread(io.BytesIO(data))
        return get_decoder(ds.file_meta.TransferSyntaxUID).as_array(ds, index=0, decoding_plugin=plugin)[0]

    return decode


def _dicomsdl(data: bytes) -> np.ndarray:
    import dicomsdl

    return dicomsdl.open_memory(data).pixelData(storedvalue=True)


def _imagecodecs(data: bytes) -> np.ndarray:
    import imagecodecs

    return imagecodecs.ljpeg_decode(_frame(pydicom.dcmread(io.BytesIO(data))))


def _imagecodecs_j2k(data: bytes) -> np.ndarray:
    import imagecodecs

    return imagecodecs.jpeg2k_decode(_frame(pydicom.dcmread(io.BytesIO(data))))


CANDIDATES = {
    "sv1": (
        ("pylibjpeg-libjpeg", "libjpeg", _via_pydicom("pylibjpeg")),
        ("python-gdcm", "gdcm", _via_pydicom("gdcm")),
        ("dicomsdl", "dicomsdl", _dicomsdl),
        ("imagecodecs", "imagecodecs", _imagecodecs),
    ),
    "j2k": (
        ("pylibjpeg-openjpeg", "openjpeg", _via_pydicom("pylibjpeg")),
        ("python-gdcm", "gdcm", _via_pydicom("gdcm")),
        ("pillow", "PIL", _via_pydicom("pillow")),
        ("dicomsdl", "dicomsdl", _dicomsdl),
        ("imagecodecs", "imagecodecs", _imagecodecs_j2k),
    ),
}


def candidates(syntax: str = "sv1") -> dict:
    found = {}
    for name, module, decode in CANDIDATES[syntax]:
        try:
            __import__(module)
        except ImportError:
            continue
        found[name] = decode
    return found


def to_sv1(native: Path, out: Path) -> None:
    import gdcm

    reader = gdcm.ImageReader()
    reader.SetFileName(str(native))
    if not reader.Read():
        raise RuntimeError(f"GDCM cannot read {native}")
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.JPEGLosslessProcess14_1))
    change.SetInput(reader.GetImage())
    if not change.Change():
        raise RuntimeError(f"GDCM cannot transcode {native} to JPEG Lossless SV1")
    writer = gdcm.ImageWriter()
    writer.SetFileName(str(out))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    if not writer.Write():
        raise RuntimeError(f"GDCM cannot write {out}")


def _damaged(data: bytes, how: str) -> bytes:
    """The file with its codestream cut to 60 % or with noise over its middle eighth (the header intact)."""
    ds = pydicom.dcmread(io.BytesIO(data))
    frame = bytearray(_frame(ds))
    n = len(frame)
    if how == "cut":
        frame = frame[: n * 3 // 5]
    else:
        frame[n // 2 - n // 16 : n // 2 + n // 16] = (
            np.random.default_rng(0).integers(0, 256, n // 8, np.uint8).tobytes()
        )
    ds.PixelData = encapsulate([bytes(frame)])
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _child(syntax: str, name: str, data: bytes, queue) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = candidates(syntax)[name](data)
        queue.put(f"returned an image {np.asarray(image).shape}")
    except BaseException as exc:
        queue.put(f"raised {type(exc).__name__}")


def on_damage(syntax: str, name: str, data: bytes) -> str:
    queue = multiprocessing.get_context("fork").Queue()
    child = multiprocessing.get_context("fork").Process(target=_child, args=(syntax, name, data, queue))
    child.start()
    child.join(120)
    return queue.get() if child.exitcode == 0 else f"crashed (exit {child.exitcode})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="2776x2082")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--syntax", choices=sorted(CANDIDATES), default="sv1")
    args = parser.parse_args()
    # One core: stage 1 runs one decoding process per core, so a decoder that is faster only by using more
    # threads (GDCM's JPEG 2000) must not look faster here.
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    shape = tuple(int(v) for v in args.shape.split("x"))
    found = candidates(args.syntax)
    with tempfile.TemporaryDirectory() as tmp:
        root = synthetic.generate(
            Path(tmp) / "native",
            n_patients=1,
            image_shape=shape,
            seed=3,
            transfer_syntaxes=(str(ExplicitVRLittleEndian),),
        )
        natives = sorted(root.rglob("*.dcm"))[: args.images]
        files = []
        for k, native in enumerate(natives):
            out = Path(tmp) / f"{args.syntax}_{k}.dcm"
            if args.syntax == "sv1":
                to_sv1(native, out)
                assert pydicom.dcmread(out).file_meta.TransferSyntaxUID == JPEGLosslessSV1
            else:
                ds = pydicom.dcmread(native)
                ds.compress(JPEG2000Lossless, generate_instance_uid=False)
                ds.save_as(out, enforce_file_format=True)
            files.append((out.read_bytes(), pydicom.dcmread(native).pixel_array))
        shutil.rmtree(root)
    name = {"sv1": "JPEG Lossless SV1", "j2k": "JPEG 2000 Lossless"}[args.syntax]
    print(f"{len(files)} {name} files of {shape[0]} x {shape[1]}, best of {args.repeat}")
    print(f"| decoder | version | s per image | vs {next(iter(found))} | exact | cut to 60 % | noise in the middle |")
    print("|---|---|---|---|---|---|---|")
    baseline = None
    for name, decode in found.items():
        seconds, exact = [], True
        for data, truth in files:
            best = float("inf")
            for _ in range(args.repeat):
                started = time.perf_counter()
                image = decode(data)
                best = min(best, time.perf_counter() - started)
            seconds.append(best)
            exact &= np.array_equal(np.asarray(image), truth)
        mean = float(np.mean(seconds))
        baseline = baseline or mean
        damage = [on_damage(args.syntax, name, _damaged(files[0][0], how)) for how in ("cut", "noise")]
        print(
            f"| {name} | {_version(name)} | {mean:.3f} | {mean / baseline:.2f}x | {'yes' if exact else 'NO'} | "
            f"{damage[0]} | {damage[1]} |"
        )


def _version(name: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "?"


if __name__ == "__main__":
    main()
