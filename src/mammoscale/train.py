"""Train one grid cell from the tile cache and record what it measured in ``metrics.json``.

``run_cell(cell, out_dir)`` is the one entry: the command line (``python -m mammoscale.train``)
and the Snakemake adapter call it. A cell is a ViT (family, attention kernel, size) at one image
and patch size, trained with AdamW (linear warm-up, then cosine), bf16 autocast, a constant
global batch made of micro-batches x ranks x accumulation steps, on one of the data-parallel
backends of :mod:`mammoscale.distributed`.

Two modes: ``full`` trains ``epochs`` epochs and evaluates per breast on the validation split
(the study's 20-epoch runs); ``throughput`` runs ``timing_warmup_steps + timed_steps`` optimiser
steps and stops (2048 px with patch 8 for 20 epochs is days of GPU time; its speed is not).

What a cell can end as (``status``): ``ok``; ``oom`` (an allocation failed: a result for the
figures, exit code 0); ``skipped`` (the kernel asked for cannot run on this machine, exit 0);
``failed`` (the loss became NaN or infinite, or an unexpected error; exit 1). Every status writes
a schema-valid metrics.json.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

from mammoscale import cache, checkpoint, data, devices, distributed, flops, metrics, models, scores
from mammoscale.errors import UserError
from mammoscale.settings import Settings

log = logging.getLogger("mammoscale.train")

EXIT_CODES = {"ok": 0, "oom": 0, "skipped": 0, "failed": 1}
PROGRESS_EVERY_S = 60.0  # a progress line in the log at most this often, during long epochs


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite: the cell cannot continue."""


# learning rate


def learning_rate(step: int, *, total: int, warmup: int, base: float, min_fraction: float, scale: float) -> float:
    """Linear warm-up from ~0 to ``base * scale`` over ``warmup`` steps, then cosine down to ``min_fraction``.

    ``scale`` is the world size when ``lr_scale_with_world_size`` is set (Goyal et al. 2017: the
    rate grows with the number of workers, reached gradually); 1 otherwise. With a constant global
    batch, as this study keeps, the averaged gradient does not change with the world size, so the
    default is not to scale.
    """
    peak = base * scale
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (min_fraction + (1 - min_fraction) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def optimizer_for(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on norms, biases or embeddings' 1-D vectors)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.999))


def autocast(precision: str, device: torch.device):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# one cell


class Cell:
    """The state of one training run on one rank; :meth:`run` returns its metrics."""

    def __init__(self, settings: Settings, ctx: distributed.Context, out_dir: Path):
        self.s, self.ctx, self.out_dir = settings, ctx, out_dir
        self.device = ctx.device
        self.grad_accum = settings.grad_accum(ctx.world)
        self.record: dict = {}
        self.loss_curve: list[float] = []
        self.epoch_times: list[float] = []
        self.step_times: list[float] = []
        self.wait_times: list[float] = []
        self.steps_done = 0
        self.epochs_done = 0
        self.resumed_from: int | None = None
        self.params: int | None = None
        self.peak = devices.PeakMemory(self.device)
        self.last_progress = time.monotonic()

    # set-up

    def prepare(self) -> None:
        s = self.s
        root = s.cache_root
        if s.local_scratch:
            root = cache.stage(root, s.image_size, s.local_scratch)
        self.train = data.open_split(root, s.image_size, "train", min_size=s.global_batch)
        self.val = data.open_split(root, s.image_size, "val") if s.mode == "full" else None
        self.steps_per_epoch = len(self.train) // s.global_batch
        self.total_steps = (self.steps_per_epoch * s.epochs if s.mode == "full"
                            else s.timing_warmup_steps + s.timed_steps)
        self.warmup_steps = math.ceil(s.warmup_fraction * self.total_steps)

        torch.manual_seed(s.seed)
        np.random.seed(s.seed)
        model = models.build(s.model, s.attention, s.model_size, image_size=s.image_size,
                             patch_size=s.patch_size, channels=s.channels)
        self.params = models.params(model)
        self.kernel()  # refuses a kernel this machine cannot run before any work
        self.peak.reset()
        self.model = self.ctx.wrap_model(model)
        optimizer = optimizer_for(distributed.unwrap(self.model), s.lr, s.weight_decay)
        # Horovod's wrapper is a new optimiser over the same parameters: load a checkpoint into it, not before
        self.optimizer = self.ctx.wrap_optimizer(optimizer, self.model, self.grad_accum)
        self._resume()
        self.ctx.broadcast_optimizer_state(self.optimizer)

        on_device = {"yes": True, "no": False}.get(s.data_on_device)
        if on_device is None:
            on_device = data.fits_on_device(self.train.nbytes(), self.device)
        sampler = data.train_sampler(self.train, world=self.ctx.world, rank=self.ctx.rank, seed=s.seed)
        self.batches = data.Batches(self.train, sampler, micro_batch=s.micro_batch, device=self.device,
                                    on_device=on_device, workers=s.loader_workers, pin_memory=s.pin_memory)
        log.info("cell %s/%s img%d p%d: %s %s, %d tokens, %.1fM parameters; global batch %d = %d micro x %d "
                 "rank(s) x %d accumulation; %d steps (%d per epoch)", s.hardware, s.variant, s.image_size,
                 s.patch_size, s.model, s.attention, models.seq_len(s.model, s.image_size, s.patch_size),
                 self.params / 1e6, s.global_batch, s.micro_batch, self.ctx.world, self.grad_accum,
                 self.total_steps, self.steps_per_epoch)

    def kernel(self):
        """A fresh kernel-forcing context for each use (``sdpa_kernel`` contexts cannot be re-entered)."""
        return models.kernel_context(self.s.attention, self.device)

    def _resume(self) -> None:
        if self.s.mode != "full" or not self.s.checkpoint:
            return
        state = checkpoint.load(self.out_dir, checkpoint.fingerprint(self.s.training_identity()))
        if state is None:
            return
        distributed.unwrap(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epochs_done = self.resumed_from = int(state["epoch"])
        self.steps_done = int(state["step"])
        self.loss_curve = [float(x) for x in state["loss_curve"]]
        self.epoch_times = [float(x) for x in state["epoch_times"]]
        log.info("resuming from the checkpoint of epoch %d (step %d)", self.epochs_done, self.steps_done)

    # training

    def run(self) -> None:
        s = self.s
        if s.mode == "throughput":
            stream = self._micro_batches_forever()
            self._train_steps(stream, self.total_steps)
            return
        for epoch in range(self.epochs_done, s.epochs):
            started = time.perf_counter()
            self._train_steps(iter(self.batches.epoch(epoch)), self.steps_per_epoch)
            self.epoch_times.append(devices.now(self.device) - started)
            self.epochs_done = epoch + 1
            log.info("epoch %d/%d: %.1f s, last loss %.4f", epoch + 1, s.epochs, self.epoch_times[-1],
                     self.loss_curve[-1])
            if s.checkpoint and self.ctx.primary:
                checkpoint.save(self.out_dir, self._state())
            self.ctx.barrier()

    def _micro_batches_forever(self):
        epoch = 0
        while True:
            yield from self.batches.epoch(epoch)
            epoch += 1

    def _train_steps(self, stream, steps: int) -> None:
        s = self.s
        criterion = nn.CrossEntropyLoss()
        self.model.train()
        for _ in range(steps):
            lr = learning_rate(self.steps_done, total=self.total_steps, warmup=self.warmup_steps, base=s.lr,
                               min_fraction=s.min_lr_fraction,
                               scale=self.ctx.world if s.lr_scale_with_world_size else 1)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            started = devices.now(self.device)
            step_loss = 0.0
            waited = 0.0
            for micro in range(self.grad_accum):
                asked = time.perf_counter()
                tiles, labels = next(stream)
                waited += time.perf_counter() - asked
                probe = models.attention_kernels(self.record) if "kernel" not in self.record else \
                    contextlib.nullcontext()
                with probe, self.kernel(), self.ctx.sync_gradients(self.model, micro == self.grad_accum - 1):
                    with autocast(s.precision, self.device):
                        logits = self.model(data.to_model_input(tiles, s.channels, self.device))
                    loss = criterion(logits.float(), labels.to(self.device)) / self.grad_accum
                    loss.backward()
                step_loss += loss.detach()
            self.optimizer.step()
            self.optimizer.zero_grad()
            value = self.ctx.mean(float(step_loss))
            self.step_times.append(devices.now(self.device) - started)
            self.wait_times.append(waited)
            self.steps_done += 1
            if not math.isfinite(value):
                raise NonFiniteLoss(f"the training loss became {value} at step {self.steps_done} (lr {lr:.3g}); "
                                    "lower lr or use fp32 to find the cause")
            self.loss_curve.append(value)
            self._progress()

    def _progress(self) -> None:
        if time.monotonic() - self.last_progress < PROGRESS_EVERY_S:
            return
        self.last_progress = time.monotonic()
        recent = self.step_times[-20:]
        log.info("step %d/%d: loss %.4f, %.2f img/s over the last %d step(s)", self.steps_done, self.total_steps,
                 self.loss_curve[-1], self.s.global_batch * len(recent) / sum(recent), len(recent))

    def _state(self) -> dict:
        optimizer = self.optimizer
        return {
            "fingerprint": checkpoint.fingerprint(self.s.training_identity()),
            "epoch": self.epochs_done,
            "step": self.steps_done,
            "model": distributed.unwrap(self.model).state_dict(),
            "optimizer": optimizer.state_dict(),
            "loss_curve": self.loss_curve,
            "epoch_times": self.epoch_times,
        }

    # evaluation

    def evaluate(self) -> dict:
        """Per-breast val AUC and pF1 of the final model, each rank scoring a partition of the split."""
        if self.val is None:
            return {"val_auc": None, "val_pf1": None}
        model = distributed.unwrap(self.model).eval()
        rows = data.eval_rows(len(self.val), world=self.ctx.world, rank=self.ctx.rank)
        probabilities: list[float] = []
        with torch.no_grad(), self.kernel():
            for start in range(0, len(rows), self.s.micro_batch):
                chosen = rows[start:start + self.s.micro_batch]
                tiles = torch.stack([self.val[i][0] for i in chosen])
                with autocast(self.s.precision, self.device):
                    logits = model(data.to_model_input(tiles, self.s.channels, self.device))
                probabilities += torch.softmax(logits.float(), dim=1)[:, 1].cpu().tolist()
        gathered = self.ctx.gather((rows, probabilities))
        order = [i for part, _ in gathered for i in part]
        probs = [p for _, part in gathered for p in part]
        index = self.val.index.iloc[order]
        breasts = scores.per_breast(index["patient_id"].to_numpy(), index["laterality"].to_numpy(),
                                    index["label"].to_numpy(), np.asarray(probs))
        result = scores.evaluate(breasts)
        log.info("validation: %d breasts, AUC %s, pF1 %s", len(breasts), result["val_auc"], result["val_pf1"])
        return result

    # the record

    def metrics(self, status: str, message: str | None, quality: dict | None = None) -> dict:
        s = self.s
        tokens = models.seq_len(s.model, s.image_size, s.patch_size)
        per_image = flops.train_flops_per_image(s.model_size, tokens=tokens, patch_size=s.patch_size,
                                                channels=s.channels)
        first = max(1, s.timing_warmup_steps)
        timed = self.step_times[first:] if status == "ok" else []
        waits = self.wait_times[first:] if status == "ok" else []
        throughput = s.global_batch * len(timed) / sum(timed) if timed and sum(timed) > 0 else None
        if status == "ok" and throughput is None:
            log.warning("no throughput: %d step(s) ran and the first %d are warm-up (timing_warmup_steps, at "
                        "least 1)", len(self.step_times), max(1, s.timing_warmup_steps))
        achieved = flops.achieved_tflops(per_image, throughput) if throughput else None
        quality = quality or {"val_auc": None, "val_pf1": None}
        return {
            "schema_version": metrics.SCHEMA_VERSION,
            "status": status,
            "message": message,
            "hardware": s.hardware,
            "variant": s.variant,
            "model": f"{s.model}/{s.model_size}",
            "attention": s.attention,
            "attention_backend": self.record.get("kernel"),
            "image_size": s.image_size,
            "patch_size": s.patch_size,
            "seq_len": tokens,
            "params": self.params,
            "mode": s.mode,
            "epochs": self.epochs_done,
            "steps": self.steps_done,
            "global_batch": s.global_batch,
            "micro_batch": s.micro_batch,
            "grad_accum": self.grad_accum,
            "world_size": self.ctx.world,
            "backend": self.ctx.backend,
            "throughput_img_s": throughput,
            "step_time_s": statistics.median(timed) if timed else None,
            "input_wait_fraction": sum(waits) / sum(timed) if throughput else None,
            "loader_img_s": s.global_batch * len(waits) / sum(waits) if throughput and sum(waits) > 0 else None,
            "epoch_times_s": self.epoch_times,
            "train_time_s": sum(self.epoch_times) if s.mode == "full" else (sum(self.step_times) or None),
            "peak_mem_bytes": self.peak.peak() if self.params is not None else None,
            "peak_mem_kind": self.peak.kind,
            "flops_per_img": per_image,
            "achieved_tflops": achieved,
            "mfu": flops.mfu(achieved, s.peak_tflops, self.ctx.world) if achieved else None,
            "val_auc": quality["val_auc"],
            "val_pf1": quality["val_pf1"],
            "loss_curve": self.loss_curve,
            "resumed_from_epoch": self.resumed_from,
            "env": metrics.environment(devices.names(self.device), self.device.type, self.ctx.backend),
            "config": s.as_dict(),
        }


def run_cell(cell: dict, out_dir: Path | str) -> dict:
    """Run one cell from its resolved settings; write ``metrics.json`` (and ``train.log``, checkpoints)
    into ``out_dir`` from rank 0; return the metrics (on every rank)."""
    settings = Settings.from_dict(cell)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = distributed.init(settings.backend, settings.device)
    if not ctx.primary:
        logging.getLogger("mammoscale").setLevel(logging.WARNING)
    result = None
    try:
        with _cell_log(out_dir / "train.log" if ctx.primary else None):
            settings.grad_accum(ctx.world)
            result = _run(settings, ctx, out_dir)
            if ctx.primary:
                metrics.write(result, out_dir / "metrics.json")
                log.info("%s: status %s%s", out_dir / "metrics.json", result["status"],
                         f" ({result['message']})" if result["message"] else "")
        return result
    finally:
        # after an OOM, other ranks may be gone: do not wait for them in a collective shutdown
        if not (result and result["status"] == "oom" and ctx.world > 1):
            ctx.close()


def _run(settings: Settings, ctx: distributed.Context, out_dir: Path) -> dict:
    cell = Cell(settings, ctx, out_dir)
    try:
        cell.prepare()
        cell.run()
        quality = cell.evaluate()
    except models.KernelUnavailable as exc:
        log.warning("skipped: %s", exc)
        return cell.metrics("skipped", str(exc))
    except NonFiniteLoss as exc:
        log.error("%s", exc)
        return cell.metrics("failed", str(exc))
    except Exception as exc:
        if not devices.is_oom(exc):
            if not isinstance(exc, UserError) and ctx.primary:
                metrics.write(cell.metrics("failed", f"{type(exc).__name__}: {exc}"), out_dir / "metrics.json")
            raise
        message = str(exc).splitlines()[0][:500]
        log.warning("out of memory after %d step(s): %s", cell.steps_done, message)
        return cell.metrics("oom", message)
    return cell.metrics("ok", None, quality)


@contextlib.contextmanager
def _cell_log(path: Path | None):
    """Copy mammoscale's INFO records into the cell's ``train.log`` (rank 0) while the cell runs."""
    if path is None:
        yield
        return
    package = logging.getLogger("mammoscale")
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    level = package.level
    package.addHandler(handler)
    if package.getEffectiveLevel() > logging.INFO:
        package.setLevel(logging.INFO)
    try:
        yield
    finally:
        package.removeHandler(handler)
        package.setLevel(level)
        handler.close()


# command line


def parse_cell(cell_file: str | None, assignments: list[str]) -> dict:
    """A cell from a YAML/JSON file and ``key=value`` overrides (values read as YAML scalars)."""
    cell: dict = {}
    if cell_file:
        try:
            loaded = yaml.safe_load(Path(cell_file).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise UserError(f"cannot read cell file {cell_file}: {exc}") from None
        if not isinstance(loaded, dict):
            raise UserError(f"{cell_file} must hold a mapping of cell settings")
        cell.update(loaded)
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"expected key=value, got {item!r}")
        cell[key.strip()] = yaml.safe_load(value) if value.strip() else None
    return cell


def main(argv: list[str] | None = None) -> int:
    from mammoscale.logs import configure

    parser = argparse.ArgumentParser(prog="python -m mammoscale.train", description=__doc__.split("\n")[0])
    parser.add_argument("--cell", help="YAML or JSON file of cell settings")
    parser.add_argument("--out", required=True, help="output directory (metrics.json, train.log, checkpoint.pt)")
    parser.add_argument("settings", nargs="*", metavar="key=value", help="settings (override --cell)")
    args = parser.parse_args(argv)
    configure(None)
    result = run_cell(parse_cell(args.cell, args.settings), args.out)
    return EXIT_CODES[result["status"]]


if __name__ == "__main__":
    sys.exit(main())
