"""torchvision, importable beside either build of torch.

PyPI's torchvision wheel is built against CUDA torch. Beside the CPU build (``torch==2.13.0+cpu``, developer and CI
machines) its C++ extension ``_C.so`` cannot load (it links ``libtorch_cuda``), and ``import torchvision`` then fails
while registering meta kernels for two operators the extension would have defined: ``RuntimeError: operator
torchvision::nms does not exist``; so does importing Hugging Face's ViT, since transformers imports torchvision
wherever it is installed. The study's models need none of the extension's operators (detection's ``nms``,
``roi_align``, image decoding). :func:`torchvision` declares those two operators' schemas, and nothing else, only
where the extension cannot load; where it loads (CUDA torch on a GPU cluster) nothing is declared. Whatever imports
torchvision or transformers calls it first.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import torch

SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
"""The ``torchvision::`` operators whose meta kernels ``import torchvision`` registers whatever its extension did."""

_declared: torch.library.Library | None = None
"""The library holding :data:`SCHEMAS` once declared: kept alive, or torch would drop the operators."""


def extension_loads() -> bool:
    """Whether torchvision's C++ extension (``_C*.so`` beside its ``__init__.py``) loads beside this torch."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return False
    for path in sorted(Path(spec.submodule_search_locations[0]).glob("_C*.so")):
        try:
            torch.ops.load_library(str(path))
            return True
        except OSError:
            return False
    return False


def declared() -> bool:
    """Whether :func:`torchvision` declared :data:`SCHEMAS` (the extension could not load)."""
    return _declared is not None


def torchvision() -> ModuleType:
    """``import torchvision``, its two missing operator schemas declared first where its extension cannot load."""
    global _declared
    if "torchvision" not in sys.modules and _declared is None and not extension_loads():
        _declared = torch.library.Library("torchvision", "DEF")
        for schema in SCHEMAS:
            _declared.define(schema)
    import torchvision

    return torchvision
