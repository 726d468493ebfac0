"""The study a config describes, checked whole before any job runs: what the Snakefile plans with.

:meth:`Study.from_config` completes and validates the config (:func:`mammoscale.config.load`),
then refuses, one line each and naming the cell or key, whatever the config alone decides
cannot work: an unknown hardware profile, an extra cell outside the grid, a grid with no cell,
a canonical size below the largest image size, split fractions that do not sum to 1, a
reference cell or baseline variant not in the grid, and any cell whose settings cannot train
(a global batch that its ranks cannot share, say). With ``need_data``, an RSNA ``data.root``
without its ``train.csv`` too (:meth:`Study.check_data`). A SLURM job never discovers these
hours later.

Each cell is planned here too (:mod:`mammoscale.plan.sizing`): its micro-batch, predicted memory
and cost, and whether it is submitted.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from mammoscale import config as configuration
from mammoscale import files, tasks
from mammoscale.dataset import chestxray14
from mammoscale.dataset.manifest import ManifestError, check_fractions  # the manifest's rule, its tolerance
from mammoscale.errors import UserError
from mammoscale.plan import families, grid, sizing, vit
from mammoscale.plan.grid import Cell
from mammoscale.plan.launch import check_profile, ranks
from mammoscale.plan.settings import Settings


@dataclass(frozen=True)
class Study:
    config: dict
    """The complete config: every default filled in, validated."""

    @classmethod
    def from_config(cls, raw: dict, *, need_cells: bool = True, need_data: bool = False) -> Study:
        """The checked study of a config; without ``need_cells``, a grid without a cell is not an error (the
        cache needs image sizes only; :meth:`no_cell` says why there is none). With ``need_data``, the RSNA
        directory must be there (:meth:`check_data`); the plan needs no data, so a laptop plans for a cluster."""
        study = cls(configuration.load(raw))
        study.check(need_cells=need_cells)
        if need_data:
            study.check_data()
        return study

    # the grid

    @property
    def image_sizes(self) -> list[int]:
        return sorted(self.config["grid"]["image_sizes"])

    @property
    def patch_sizes(self) -> list[int]:
        return sorted(self.config["grid"]["patch_sizes"])

    @property
    def variants(self) -> dict:
        return self.config["grid"]["variants"]

    @property
    def profiles(self) -> dict:
        return self.config["hardware"]

    @cached_property
    def cells(self) -> list[Cell]:
        """Every configured cell: the product, then the extra cells."""
        product = grid.cells(self.image_sizes, self.patch_sizes, self.variants, self.config["grid"]["hardware"])
        return grid.with_extra_cells(
            product,
            self.config["grid"]["extra_cells"],
            image_sizes=self.image_sizes,
            variants=self.variants,
            profiles=self.profiles,
        )

    @property
    def hardware_used(self) -> list[str]:
        """The hardware of the cells: grid.hardware, then the extra cells' profiles."""
        return list(dict.fromkeys(cell.hardware for cell in self.cells))

    @property
    def selected_profiles(self) -> dict:
        """The profiles of every cell's hardware (the figures' labels and memory limits), in grid order."""
        return {name: self.profiles[name] for name in self.hardware_used}

    @property
    def missing_note(self) -> str | None:
        """Which image x patch pairs make no cell, or None."""
        missing = grid.missing_cells(self.image_sizes, self.patch_sizes)
        return f"no cell for {', '.join(missing)}: the patch size does not divide the image size" if missing else None

    # one cell

    def cell(self, hardware: str, variant: str, image_size, patch_size) -> Cell:
        """A cell named by a rule's wildcards; its profile and variant must exist, and it has a patch size exactly
        when its variant's family does (the cell need not be configured: a path can ask for any cell of the grid's
        variants and profiles)."""
        if hardware not in self.profiles:
            raise UserError(f"no hardware profile {hardware!r}; profiles: {', '.join(self.profiles)}")
        if variant not in self.variants:
            raise UserError(f"no variant {variant!r} in grid.variants ({', '.join(self.variants)})")
        cell = Cell(hardware, variant, int(image_size), None if patch_size is None else int(patch_size))
        grid.check_patch(cell, self.variants[variant], f"cell {cell.name}")
        return cell

    def extra_seeds(self, cell: Cell) -> list[int]:
        """The seeds a quality (full-mode) cell trains again with (``train.seeds``); none for a throughput cell."""
        return [self.config["train"]["seed"] + k for k in range(1, self.plan_of(cell).runs)]

    @property
    def seed_runs(self) -> list[str]:
        """The run directories of every configured quality cell's extra seeds."""
        return [
            files.fill(files.SEED_RUN, **cell._asdict(), seed=seed)
            for cell in self.submitted_cells
            for seed in self.extra_seeds(cell)
        ]

    def cell_settings(self, cell: Cell) -> dict:
        """The cell's own settings, and nothing else: a config change reruns only the cells it concerns. Its
        micro-batch and where it holds its data are its plan's."""
        plan = self.plan_of(cell)
        return {**self._settings(cell, plan.micro_batch), "data_on_device": plan.data_setting}

    def _settings(self, cell: Cell, micro_batch: int) -> dict:
        return grid.cell_settings(
            cell,
            profile=self.profiles[cell.hardware],
            variant=self.variants[cell.variant],
            train=self.config["train"],
            cache_root=self.cache_root,
            local_scratch=self.config["cache"]["local_scratch"],
            micro_batch=micro_batch,
            task=self.task.name,
        )

    def plan_of(self, cell: Cell) -> sizing.CellPlan:
        """The cell's micro-batch, predicted memory and cost (configured or not: a path can name any cell)."""
        if cell in self.plans:
            return self.plans[cell]
        return self._plan(cell)

    def _plan(self, cell: Cell) -> sizing.CellPlan:
        profile = self.profiles[cell.hardware]
        settings = self._settings(cell, profile["micro_batch"])
        try:  # a model the cell cannot build (an image too small for DenseNet-121) is named with its cell
            families.check(*(settings[key] for key in families.CHECKED), settings["channels"])
        except UserError as exc:
            raise UserError(f"cell {cell.name}: {exc}") from None
        return sizing.plan_cell(
            cell,
            settings,
            profile,
            self.config["plan"],
            train_breasts=sizing.nominal_train_breasts(self.config),
            seeds=self.config["train"]["seeds"],
        )

    @cached_property
    def plans(self) -> dict[Cell, sizing.CellPlan]:
        """Every configured cell's plan, in grid order."""
        return {cell: self._plan(cell) for cell in self.cells}

    @property
    def submitted_cells(self) -> list[Cell]:
        """The cells whose training is submitted: all but those predicted out of memory (unless
        ``plan.submit_predicted_oom``)."""
        return [cell for cell, plan in self.plans.items() if plan.submitted]

    @property
    def predicted_oom_cells(self) -> list[Cell]:
        """The cells predicted out of memory and not submitted: the plan rule writes their records."""
        return [cell for cell, plan in self.plans.items() if not plan.submitted]

    def launch(self, hardware: str) -> dict:
        """What the job needs to start a cell's ranks."""
        profile = self.profiles[hardware]
        return {
            key: profile.get(key)
            for key in ("launcher", "nodes", "gpus_per_node", "cpus_per_task", "network_interface", "nccl_debug")
        }

    # the data

    @property
    def source(self) -> tasks.Source:
        """``data.source``: its layout, whether the workflow generates it, and its task (:mod:`mammoscale.tasks`)."""
        return tasks.source(self.config["data"]["source"])

    @property
    def task(self) -> tasks.Task:
        return self.source.task

    # the cache

    @property
    def cache_root(self) -> str:
        return self.config["cache"]["root"].rstrip("/")

    @property
    def shards(self) -> list[str]:
        return files.shard_names(self.config["cache"]["shards"])

    @property
    def canonical_size(self) -> int:
        """Size of the stored views: cache.canonical_size, or the largest image size of the grid."""
        return self.config["cache"]["canonical_size"] or self.image_sizes[-1]

    # the figures and the report

    @property
    def reference(self) -> dict:
        """``figures.reference`` with its hardware filled in: null means the first of ``grid.hardware``."""
        reference = dict(self.config["figures"]["reference"])
        reference["hardware"] = reference["hardware"] or self.config["grid"]["hardware"][0]
        return reference

    @property
    def baseline(self) -> str | None:
        return grid.choose_baseline(self.variants, self.config["figures"]["baseline"])

    def run_config(self, configfiles=()) -> dict:
        """What the report says was run: data, grid, the chosen hardware profiles, training, config files."""
        return {
            "data": self.config["data"],
            "grid": self.config["grid"],
            "hardware": self.selected_profiles,
            "train": self.config["train"],
            "configfiles": [str(path) for path in configfiles],
        }

    # the data

    @property
    def train_csv(self) -> str:
        """``data.root``'s train.csv: the RSNA layout's list of images (generated there for synthetic data)."""
        return f"{self.config['data']['root'].rstrip('/')}/{files.TRAIN_CSV}"

    def check_data(self) -> None:
        """An RSNA ``data.root`` is a directory holding train.csv, a ChestX-ray14 one its CSV and official lists
        (:func:`~mammoscale.dataset.chestxray14.check_root`); a synthetic one is generated by the workflow. A variant's
        pretrained weights are a file (its hash is checked where it is loaded)."""
        self._check_root()
        self.check_weights()

    def _check_root(self) -> None:
        if self.source.layout == "chestxray14":
            return chestxray14.check_data(self.config)
        if self.config["data"]["source"] != "rsna":
            return
        root = self.config["data"]["root"]
        layout = f"{files.TRAIN_CSV} + {files.IMAGE}"
        if not Path(root).is_dir():
            raise UserError(
                f"data.root {root} does not exist, so {self.train_csv} cannot be read: set data.root to the "
                f"RSNA-layout directory ({layout}), or data.source to synthetic"
            )
        if not Path(self.train_csv).is_file():
            raise UserError(
                f"{self.train_csv} not found: data.root must be the RSNA-layout directory ({layout}) itself, not "
                "one above or beside it"
            )

    def check_weights(self) -> None:
        """Each pretrained file a cell's variant names is there: found before a GPU job starts, not in every job."""
        for name in dict.fromkeys(cell.variant for cell in self.cells):
            weights = self.variants[name].get("weights")
            if weights and not Path(weights["path"]).is_file():
                raise UserError(
                    f"grid.variants.{name}.weights.path {weights['path']} is not a file: fetch the pretrained weights "
                    f"there once (docs/chexnet.md, 'The model family'), or point weights.path at your copy"
                )

    # checks

    def no_cell(self) -> str:
        return f"the grid has no cell: no patch size of {self.patch_sizes} divides an image size of {self.image_sizes}"

    def check(self, *, need_cells: bool = True) -> None:
        for name, variant in self.variants.items():
            families.check_variant(name, variant)
        grid.check_hardware(self.config["grid"]["hardware"], self.profiles)
        for name in self.hardware_used:
            check_profile(name, self.profiles[name])
        if not self.cells and need_cells:
            raise UserError(self.no_cell())
        if self.canonical_size < self.image_sizes[-1]:
            raise UserError(
                f"cache.canonical_size ({self.canonical_size}) is smaller than the largest "
                f"grid.image_sizes ({self.image_sizes[-1]}): raise it or set it to null"
            )
        self._check_split()
        reference = self.reference
        if reference["variant"] not in self.variants:
            raise UserError(
                f"figures.reference.variant {reference['variant']!r} is not in grid.variants "
                f"({', '.join(self.variants)})"
            )
        if self.cells and reference["hardware"] not in self.hardware_used:
            raise UserError(
                f"figures.reference.hardware {reference['hardware']!r} runs no cell (hardware of the "
                f"grid: {', '.join(self.hardware_used)})"
            )
        if self.cells:
            self._check_reference_cell()
        self.baseline  # noqa: B018 (refuses an unknown figures.baseline)
        self._check_cells()

    def _check_split(self) -> None:
        """The manifest's own rule (:mod:`mammoscale.dataset.manifest`), before its job: the fractions sum to 1."""
        split = self.config["manifest"]["split"]
        try:
            check_fractions(split)
        except ManifestError:
            terms = " + ".join(f"{name} {split[name]:g}" for name in files.SPLITS)
            raise UserError(
                f"manifest.split: {terms} = {sum(split.values()):.10g}, not 1: change the fractions so that they sum "
                "to 1"
            ) from None

    def _check_reference_cell(self) -> None:
        """Figures 2 and 3 and the claims are drawn at the reference cell: it is one of the grid's."""
        reference = self.reference
        cell = Cell(reference["hardware"], reference["variant"], reference["image_size"], reference["patch_size"])
        if cell in self.cells:
            return
        grid.check_axis(cell, self.variants[cell.variant], "figures.reference", unset="set its patch_size: null")
        size, patch = cell.image_size, cell.patch_size
        if size not in self.image_sizes:
            why = f"image size {size} is not in grid.image_sizes ({', '.join(map(str, self.image_sizes))})"
        elif patch is not None and patch not in self.patch_sizes:
            why = f"patch size {patch} is not in grid.patch_sizes ({', '.join(map(str, self.patch_sizes))})"
        elif patch is not None and size % patch:
            why = f"patch size {patch} does not divide image size {size}"
        else:
            why = f"{cell.hardware} is not in grid.hardware, and grid.extra_cells has no such cell"
        same = [c for c in self.cells if c[:2] == cell[:2]]
        if same:
            choices = f"image_size and patch_size to one of {cell.hardware}/{cell.variant}'s cells: " + ", ".join(
                c.label for c in same
            )
        else:
            choices = f"variant, image_size and patch_size to one of {cell.hardware}'s cells: " + ", ".join(
                f"{c.variant}/{c.label}" for c in self.cells if c.hardware == cell.hardware
            )
        raise UserError(
            f"figures.reference is {cell.name}, not a cell of the grid: {why}; set figures.reference's {choices}"
        )

    def _check_cells(self) -> None:
        """Each cell can train where it is planned (its ranks share its global batch, its kernel runs on its device)
        and finish within its job's time limit."""
        for cell in self.cells:
            settings = self.cell_settings(cell)  # plans the cell: a global batch its ranks cannot share fails here
            device = self.plans[cell].device
            reason = vit.cannot_run(settings["attention"], device=device, precision=settings["precision"])
            if reason:
                raise UserError(
                    f"cell {cell.name}: {reason}, and hardware profile {cell.hardware} trains on the {device} at "
                    f"{settings['precision']}: take variant {cell.variant} out of grid.variants, or the profile out "
                    "of grid.hardware"
                )
            try:
                Settings.from_dict(settings).grad_accum(ranks(self.profiles[cell.hardware]))
            except UserError as exc:
                raise UserError(f"cell {cell.name}: {exc}") from None
        late = sizing.over_time_limit(self.plans.values(), self.config["plan"]["runtime_headroom"])
        if late:
            raise UserError(sizing.time_limit_message(late, self.config["plan"]["runtime_headroom"]))
