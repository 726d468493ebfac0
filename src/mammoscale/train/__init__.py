"""Training one grid cell: everything that needs torch lives here, and only here.

- :mod:`~mammoscale.train.cell`: one cell end to end (:func:`run_cell`), every status a record;
- :mod:`~mammoscale.train.loop`: optimiser steps, epochs and checkpoints, validation;
- :mod:`~mammoscale.train.job`: a cell as a workflow job, its ranks and its record (:func:`run_job`);
- :mod:`~mammoscale.train.outcome`, :mod:`~mammoscale.train.stopping`: one outcome for several ranks;
  stopping ahead of a time limit;
- :mod:`~mammoscale.train.models`: the ViTs of :mod:`mammoscale.plan.vit`, and the kernel that ran;
- :mod:`~mammoscale.train.optim`: AdamW, the learning-rate schedule, autocast;
- :mod:`~mammoscale.train.batches`: tiles from the cache, on a loader or held on the device;
- :mod:`~mammoscale.train.backends`: one process, torch DDP, Horovod;
- :mod:`~mammoscale.train.rendezvous`: where the ranks of a cell on several nodes meet;
- :mod:`~mammoscale.train.devices`: the device, timing and peak memory;
- :mod:`~mammoscale.train.checkpoint`, :mod:`~mammoscale.train.record`, :mod:`~mammoscale.train.scores`;
- :mod:`~mammoscale.train.ranges`, :mod:`~mammoscale.train.profiling`: a step's named phases, a cell's profile;
  :mod:`~mammoscale.train.energy`: the energy of a cell's training;
- :mod:`~mammoscale.train.bench`: the attention benchmark's instruments;
- :mod:`~mammoscale.train.cli`: ``python -m mammoscale.train``, one cell from the command line.

Imports: torch, x-transformers, transformers (and Horovod when asked for), and the torch-free
rest of mammoscale (:mod:`~mammoscale.plan`, :mod:`~mammoscale.cache`, :mod:`~mammoscale.files`,
:mod:`~mammoscale.stats`); nothing outside this subpackage imports it, except the ``train_cell`` rule's adapter.
"""

from mammoscale.errors import UserError

try:
    import torch  # noqa: F401
except ModuleNotFoundError as exc:
    raise UserError(
        f"training needs {exc.name}, which this environment lacks: install the train extra "
        "(pip install -e '.[train]'; make run does) or run with --software-deployment-method conda "
        "(envs/train.yaml)"
    ) from None

from mammoscale.train.cell import run_cell
from mammoscale.train.job import run_job

__all__ = ["run_cell", "run_job"]
