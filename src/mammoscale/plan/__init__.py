"""Planning the study, torch-free: everything the Snakefile needs when it is parsed.

- :mod:`~mammoscale.plan.study`: the study a config describes, checked whole (:class:`Study`);
- :mod:`~mammoscale.plan.grid`: which cells exist and each cell's own settings;
- :mod:`~mammoscale.plan.settings`: one cell's settings, checked (:class:`Settings`);
- :mod:`~mammoscale.plan.vit`: the model catalogue (families, sizes, kernels and the names of those
  observed, sequence length);
- :mod:`~mammoscale.plan.flops`: FLOPs per image, achieved TFLOP/s and MFU;
- :mod:`~mammoscale.plan.launch`: launchers and ranks (the command a job runs, the rank it reads);
- :mod:`~mammoscale.plan.digest`: the source digest that redraws the results when their code changes.

Imports: PyYAML, jsonschema, psutil and :mod:`mammoscale.config`, :mod:`mammoscale.files`,
:mod:`mammoscale.errors`, :mod:`mammoscale.dataset` (the manifest's own rule); never torch (every
SLURM job parses the Snakefile again, and a laptop plans a cluster's study), never the training or
report subpackages.
"""
