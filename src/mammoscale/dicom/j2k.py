"""A JPEG 2000 frame at a coarser resolution level: the same image, 2^level times smaller a side.

A JPEG 2000 codestream holds its image as wavelet resolution levels (the COD marker says how
many decompositions). Decoding level ``r`` stops before the ``r`` finest ones, which are most of
the entropy-decoding work: on a 2776 x 2082 mammogram, level 2 decodes 13 to 20 times faster than
the full image (bench/README.md). The reduced image is the wavelet's low-pass band: close to a
box-filter downsample of the full one (about half a grey level of 255 on average; edges differ
more), which is what the resize to a tile does anyway.

Pillow's plugin (OpenJPEG) decodes a level (``im.reduce = r``) and returns 16-bit data as I;16
with values shifted left by 16 minus the codestream's precision; shifting back is exact at level
0. (The library that can: imagecodecs' ``jpeg2k_decode`` has no level, pylibjpeg-openjpeg decodes
full images only, glymur needs the system's OpenJPEG library; docs/decoder.md.)
:mod:`mammoscale.preprocess.levels` chooses the level; :func:`decode_at_level` returns None
whenever anything is unclear (no COD marker, fewer levels, a signed or multi-component
codestream, more than 16 bits, Pillow without JPEG 2000), and the caller decodes the full image as
usual.
"""

from __future__ import annotations

import functools
import importlib.metadata
import io
import struct
import warnings

import numpy as np
from PIL import Image, ImageFile, features

SOC, SIZ, COD, SOT = b"\xff\x4f", 0x51, 0x52, 0x90


def _main_header(codestream: bytes):
    """(marker, segment bytes after its length) for each marker segment of the main header, until SOT."""
    if codestream[:2] != SOC:
        return
    i = 2
    while i + 4 <= len(codestream) and codestream[i] == 0xFF:
        marker = codestream[i + 1]
        if marker == SOT:
            return
        length = struct.unpack(">H", codestream[i + 2 : i + 4])[0]
        yield marker, codestream[i + 4 : i + 2 + length]
        i += 2 + length


def resolution_levels(codestream: bytes) -> int:
    """How many decomposition levels the codestream's COD marker declares (0 when none is found)."""
    for marker, segment in _main_header(codestream):
        if marker == COD and len(segment) >= 6:
            return segment[5]  # Scod, progression order, layers (2), MCT, then SPcod's decompositions
    return 0


def precision(codestream: bytes) -> tuple[int, bool, int] | None:
    """(bits, signed, components) of the codestream's first component, from SIZ; None without SIZ."""
    for marker, segment in _main_header(codestream):
        if marker == SIZ and len(segment) >= 39:
            components = struct.unpack(">H", segment[34:36])[0]
            ssiz = segment[36]
            return (ssiz & 0x7F) + 1, bool(ssiz & 0x80), components
    return None


@functools.cache
def pillow() -> str | None:
    """``pillow <version>`` when Pillow can decode JPEG 2000, else None."""
    if not features.check_codec("jpg_2000"):
        return None
    return f"pillow {importlib.metadata.version('pillow')}"


def decode_at_level(codestream: bytes, level: int) -> np.ndarray | None:
    """The frame's unsigned values at resolution ``level`` (rows and columns divided by 2^level, rounded up),
    or None where the reduced decode is not sure to be right (see the module docstring)."""
    info = precision(codestream)
    if level < 1 or info is None or pillow() is None:
        return None
    bits, signed, components = info
    if signed or components != 1 or bits > 16 or resolution_levels(codestream) < level:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = _load_reduced(codestream, level)
    except Exception:  # the full decode will say what is wrong, with its kind
        return None
    values = np.asarray(image)
    if image.mode == "L" and bits == 8:
        return values
    if image.mode != "I;16":
        return None
    return values >> (16 - bits) if bits < 16 else values


def _load_reduced(codestream: bytes, level: int) -> Image.Image:
    """Pillow's ``im.reduce = level; im.load()``, with the reduced size OpenJPEG gives.

    Pillow 13 rounds the reduced size half up, OpenJPEG rounds it up: 1841 columns at level 2 are
    461 for OpenJPEG and 460 for Pillow, whose decode then fails ("broken data stream"). This sets
    the size and the decoder's tile as Pillow's own ``Jpeg2KImageFile.load`` does, with the size
    rounded up (tested against pillow==13.0.0, the pinned version; any failure is a fallback to the
    full decode).
    """
    image = Image.open(io.BytesIO(codestream))
    width, height = image.size
    power = 1 << level
    image._size = (-(-width // power), -(-height // power))
    decoder, _, offset, args = image.tile[0]
    image.tile = [ImageFile._Tile(decoder, (0, 0, *image.size), offset, (args[0], level, image.layers, *args[3:]))]
    ImageFile.ImageFile.load(image)
    return image
