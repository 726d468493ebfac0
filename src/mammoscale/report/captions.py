"""The figures by name: what each shows, in one sentence, and where it sits in Snakemake's report.

Kept apart from :mod:`mammoscale.report.figures` so that the Snakefile, which every SLURM job parses,
can list the figures without importing matplotlib.

A study draws the figures whose subject its grid has (:func:`drawn`): Figures 3 and 4 are about a ViT's patch size
and attention kernel, so a grid of CNNs alone (the CheXNet study) leaves them out, and its report says why
(:func:`left_out`).
"""

from mammoscale.plan import families

CAPTIONS = {
    "fig2_hardware": "Figure 2 (hardware): images per second, and time to train where measured, of the reference "
    "cell on each hardware profile, labelled with its ranks and micro-batch.",
    "fig3_patch_size": "Figure 3 (patch size): throughput against patch size at the reference image size on the "
    "reference hardware, with each patch size's sequence length under its label; a variant without patches (a CNN) "
    "is a dashed level at its throughput at that image size.",
    "fig4_flash_vs_baseline": "Figure 4 (flash vs baseline): throughput of each variant over image size and patch "
    "size on the reference hardware, the flash speed-up over each baseline written on its "
    "bar, and cells "
    "that ran out of memory, failed or have not run marked where their bar would be; a variant without attention "
    "(a CNN) is not drawn, as no speed-up is about it.",
    "memory": "Peak memory against sequence length for each variant and patch size (log scales): measured "
    "(filled; CUDA's max allocated on a GPU, the peak resident set on a CPU, which adds the runtime's own memory) "
    "and predicted by the memory model (hollow, dotted; docs/memory.md), with the device memory as a dashed line "
    "and out-of-memory cells drawn on it as crosses (thin: predicted, not run); a CNN's cells (no tokens) against "
    "image size, in a panel of their own.",
    "efficiency": "Compute efficiency (MFU where the profile gives a peak, else achieved TFLOP/s) against sequence "
    "length for each variant and patch size; a CNN's cells (no tokens) against image size, in a panel of their own.",
    "data_pipeline": "Data pipeline: items per second of each preprocessing job (left), and, per trained cell, the "
    "rate the input pipeline delivered against the rate the model consumed (right); points above "
    "the diagonal mean input did not starve the model.",
    "quality": "Model quality: validation AUC per cell where training ran in full mode (left), and the training "
    "loss of every cell that ran on the reference hardware (right).",
    "scaling": "Scaling across ranks and nodes: throughput against ranks (log2 axes) of each cell run on hardware "
    "profiles of one device type that differ in ranks or nodes, with its 95% interval, the ideal (linear from the "
    "series' smallest run) dashed and the efficiency (speed-up / ranks ratio) at each point; the marker is the nodes.",
}
FIGURES = tuple(CAPTIONS)
SUBJECTS = {"fig3_patch_size": "has_patches", "fig4_flash_vs_baseline": "has_attention"}
"""The figures about what only some families have: the :class:`~mammoscale.plan.families.Family` property one of
the grid's variants must have for the figure to be drawn."""
SUBJECT_WORDS = {"has_patches": "a patch size", "has_attention": "an attention kernel"}
CATEGORY = dict.fromkeys(FIGURES, "Performance") | {"quality": "Model quality"}


def left_out(variants: dict) -> dict[str, str]:
    """The figures a study of ``variants`` (``grid.variants``) does not draw, each with why: no variant has its
    subject (:data:`SUBJECTS`)."""
    kinds = [families.family(spec["family"]) for spec in variants.values()]
    return {
        name: f"no variant of grid.variants has {SUBJECT_WORDS[subject]} (families: "
        f"{', '.join(dict.fromkeys(kind.name for kind in kinds))})"
        for name, subject in SUBJECTS.items()
        if not any(getattr(kind, subject) for kind in kinds)
    }


def drawn(variants: dict) -> tuple[str, ...]:
    """The figures a study of ``variants`` draws: :data:`FIGURES` in order, but those :func:`left_out`."""
    out = left_out(variants)
    return tuple(name for name in FIGURES if name not in out)
