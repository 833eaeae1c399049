"""train -> prune -> finetune for one run, with a checkpoint after every epoch.

The loop knows the Method interface only: attach, penalty, step, masks, detach, state.
"""
from __future__ import annotations

import copy
import logging
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from . import distributed
from .atomic import atomic_path
from .accel import Accel
from .config import Granularity, Optim, RunConfig, Schedule, TrainConfig
from .curve import prune_curve
from .datasets import Data, Split, load_data
from .errors import ConfigError, RunDirError, TrainingDiverged
from .methods import Method, build_method
from .metrics import measure
from .metrics.flops import dense_flops
from .metrics.slim import max_abs_diff, save as save_slim, slim as slim_model
from .metrics.sparsity import architecture, count_nonzero, prunable_layers
from .metrics.speed import csr_linear_speed, model_speed
from .models import build_model
from .pruning import Masks, apply_masks, check_layer_names, damage_warning, heaviest_tail, mask_gradients
from .run_dir import CHECKPOINT
from .run_log import Recorder, percent

log = logging.getLogger("sparsity_bench")


def _machine(device: torch.device) -> str:
    """What ran the job, for the record next to its timings."""
    import os
    import platform

    where = f"{platform.machine()}, {os.cpu_count()} CPUs"
    return f"{where}, {torch.cuda.get_device_name(device)}" if device.type == "cuda" else where


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda was asked for but no CUDA GPU is visible; use device=cpu or device=auto.")
    return torch.device(name)


def make_optimizer(params, t: TrainConfig) -> torch.optim.Optimizer:
    if t.optimizer == Optim.sgd:
        return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, nesterov=t.nesterov, weight_decay=t.weight_decay)
    return torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay)


def make_scheduler(opt: torch.optim.Optimizer, t: TrainConfig, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step learning-rate factor: constant, cosine to zero, or steps at fractions of the run."""
    total = max(total_steps, 1)
    if t.schedule == Schedule.cosine:
        factor = lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total))  # noqa: E731
    elif t.schedule == Schedule.multistep:
        marks = [m * total for m in t.milestones]
        factor = lambda s: t.lr_decay ** sum(s >= m for m in marks)  # noqa: E731
    else:
        factor = lambda s: 1.0  # noqa: E731
    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, batch_size: int, accel: Accel | None = None) -> float | None:
    """Top-1 accuracy on a split; None for an empty one (dataset.val_size=0: no validation split)."""
    if len(split) == 0:
        return None
    was_training = model.training
    model.eval()
    correct = 0
    for x, y in split.batches(batch_size):
        if accel is not None:
            with accel.autocast():
                logits = model(accel.input(x))
        else:
            logits = model(x)
        correct = correct + (logits.argmax(dim=1) == y).sum()  # stays on the device until the end
    model.train(was_training)
    return int(correct) / len(split)


def _rng_state(gen: torch.Generator) -> dict:
    state = {"torch": torch.get_rng_state(), "data": gen.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
        state["cuda_current"] = torch.cuda.get_rng_state()  # the device this process trains on
    return state


def _set_rng_state(state: dict, gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    gen.set_state(state["data"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
        if "cuda_current" in state:  # under torchrun each rank takes rank 0's stream onto its own GPU
            torch.cuda.set_rng_state(state["cuda_current"])


class Pipeline:
    def __init__(self, cfg: RunConfig, run_dir: Path, config_dict: dict):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.config_dict = config_dict
        self.ckpt_path = self.run_dir / CHECKPOINT
        self.dist = distributed.current()  # one process, or one rank of a torchrun group
        self.device = pick_device(cfg.device.value)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        # Sparsity penalties drive weights (and Adam's moments) towards zero through the
        # subnormal floats, where x86 arithmetic is tens of times slower: a Group-HS LeNet-5 epoch went
        # from 11 s to 130 s within 7 epochs. Flushing them to zero changes nothing a prune
        # threshold could see (|x| < 1.2e-38).
        torch.set_flush_denormal(True)
        torch.manual_seed(cfg.seed)
        with self.dist.main_first():  # a download or an offline copy is written once
            self.data: Data = load_data(cfg.dataset, self.device)
        model = build_model(cfg.model, self.data.input_shape, self.data.num_classes).to(self.device)
        self.accel = Accel.resolve(cfg, self.device, model)
        self.model = self.accel.prepare(model)
        check_layer_names(cfg.curve.exclude, [n for n, _ in prunable_layers(self.model)], "curve.exclude")
        self.method: Method = build_method(cfg.method, len(self.data.train), self.data.input_shape, cfg.prune)
        self.gen = torch.Generator(device=self.device).manual_seed(cfg.seed)
        self.masks: Masks | None = None
        self.phases: dict[str, dict] = {}
        self.prune_curve: list[dict] = []  # accuracy after one-shot pruning of the trained model (curve.py)
        self.epoch_step = 0  # TensorBoard x-axis: epochs across train and finetune
        self.rec: Recorder | None = None

    # ------------------------------------------------------------------ checkpoints
    def _save(self, phase: str, epoch: int, opt, sched, best: dict | None, clock: tuple[float, float], ema=None) -> None:
        state = {
            "ema": None if ema is None else ema.state_dict(),
            "phase": phase, "epoch": epoch, "epoch_step": self.epoch_step, "clock": clock,
            "model": self.model.state_dict(), "optimizer": opt.state_dict(), "param_names": self.param_names, "scheduler": sched.state_dict(),
            "method": self.method.state_dict(), "masks": self.masks, "phases": self.phases, "prune_curve": self.prune_curve,
            "best": best, "rng": _rng_state(self.gen), "config": self.config_dict, "tb": self.rec.mark(),
        }  # fmt: skip
        self._write_checkpoint(state)

    def _write_checkpoint(self, state: dict) -> None:
        if not self.dist.is_main:  # rank 0 writes; every rank resumes from its file
            return
        self.ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.ckpt_path) as tmp:  # a crash mid-write leaves the previous checkpoint
            torch.save(state, tmp)

    def _load(self) -> dict | None:
        if not self.ckpt_path.is_file():
            return None
        return torch.load(self.ckpt_path, map_location=self.device, weights_only=False)

    # ------------------------------------------------------------------ one phase
    def _fit(self, phase: str, t: TrainConfig, penalize: bool, resume: dict | None) -> dict:
        model, data, method = self.model, self.data, self.method
        steps_per_epoch = math.ceil(len(data.train) / t.batch_size)
        total_steps = t.epochs * steps_per_epoch
        # In name order: the optimizer's state is saved by position, and removing a parametrization
        # (L0's detach) moves a weight to the end of its module's parameters, where a model rebuilt
        # to resume the finetune phase does not have it.
        named = [(n, p) for n, p in sorted(model.named_parameters()) if p.requires_grad]
        self.param_names = [n for n, _ in named]  # saved beside the optimizer's state, checked on resume
        params = [p for _, p in named]
        opt = make_optimizer(params, t)
        sched = make_scheduler(opt, t, total_steps)
        start_epoch, best, seconds, train_seconds = 0, None, 0.0, 0.0
        if resume is not None:
            if resume.get("param_names") != self.param_names:
                raise RunDirError(
                    f"{self.ckpt_path} holds optimizer state for other parameters than this version of "
                    "sparsity_bench trains (it was written by an older one); resume it with that version, "
                    "or give this run a new hydra.run.dir."
                )
            opt.load_state_dict(resume["optimizer"])
            sched.load_state_dict(resume["scheduler"])
            start_epoch, best = resume["epoch"], resume["best"]
            seconds, train_seconds = resume["clock"]
            _set_rng_state(resume["rng"], self.gen)
        self.dist.broadcast_model(model)  # every rank starts the phase from rank 0's weights
        # The EMA's weights are the ones evaluated, and the phase's result
        ema = torch.optim.swa_utils.AveragedModel(
            model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(t.ema), use_buffers=True
        ) if t.ema > 0 else None  # fmt: skip
        if ema is not None and resume is not None and resume.get("ema") is not None:
            ema.load_state_dict(resume["ema"])
        evaluated = ema.module if ema is not None else model
        keep_best = getattr(t, "keep_best", False) and len(data.val) > 0  # without a validation split: the last epoch
        show_bar = self.cfg.progress and sys.stderr.isatty()
        accel = self.accel
        forward = accel.training_forward(model)

        for epoch in range(start_epoch, t.epochs):
            t0 = time.perf_counter()
            model.train()
            loss_sum = torch.zeros((), device=self.device)
            pen_sum = torch.zeros((), device=self.device)
            bar = tqdm(total=steps_per_epoch, desc=f"{phase} {epoch + 1}/{t.epochs}", leave=False, disable=not show_bar)
            for i, (x, y) in enumerate(data.train.batches(t.batch_size, self.gen)):
                x, y, share = self.dist.shard(x, y)  # this rank's part of the batch (all of it in one process)
                with accel.autocast():
                    loss = F.cross_entropy(forward(accel.input(x)), y)
                total = loss
                pen = method.penalty(model) if penalize else None
                if pen is not None:
                    total = loss + pen
                    pen_sum += pen.detach()
                opt.zero_grad(set_to_none=True)
                (total if share == 1.0 else total * share).backward()
                self.dist.sum_gradients(params)  # the batch's mean-loss gradient on every rank
                if self.masks is not None:
                    mask_gradients(model, self.masks)
                if t.grad_clip > 0:
                    nn.utils.clip_grad_norm_(params, t.grad_clip)
                opt.step()
                sched.step()
                if self.masks is not None:
                    apply_masks(model, self.masks)
                if ema is not None:
                    ema.update_parameters(model)
                if penalize:
                    method.step((epoch * steps_per_epoch + i + 1) / max(total_steps, 1))
                loss_sum += loss.detach() if share == 1.0 else loss.detach() * share
                bar.update()
            bar.close()
            train_seconds += time.perf_counter() - t0

            mean_loss = (self.dist.sum(loss_sum) / steps_per_epoch).item()
            if not math.isfinite(mean_loss) or not all(torch.isfinite(p).all() for p in params):
                hint = "a smaller train.lr or method.lam" if penalize else "a smaller finetune.lr"
                kept = f"the last good checkpoint is {self.ckpt_path}" if self.ckpt_path.is_file() else "no checkpoint was written before it"
                raise TrainingDiverged(f"The loss became NaN/Inf in the {phase} phase at epoch {epoch + 1}; try {hint} ({kept}).")
            self.dist.broadcast_model(model)  # rank 0's weights and batch-norm statistics are the run's
            val_acc = evaluate(evaluated, data.val, t.eval_batch_size, accel)
            self.epoch_step += 1
            measured = measure(evaluated, data.input_shape)
            scalars = {f"{phase}/loss": mean_loss, f"{phase}/lr": sched.get_last_lr()[0]}
            if val_acc is not None:
                scalars["val/acc"] = val_acc
            if penalize:
                if pen_sum.item() != 0:
                    scalars[f"{phase}/penalty"] = (pen_sum / steps_per_epoch).item()
                scalars.update({f"method/{k}": v for k, v in method.scalars(model).items()})
                self.rec.histograms({f"method/{k}": v for k, v in method.histograms(model).items()}, self.epoch_step)
            self.rec.scalars(scalars, self.epoch_step)
            self.rec.layer_sparsity(measured, self.epoch_step)
            self.rec.weight_histograms(model, self.epoch_step)
            if keep_best and (best is None or val_acc > best["val_acc"]):
                best = {"val_acc": val_acc, "epoch": epoch + 1, "model": copy.deepcopy(evaluated.state_dict())}
            seconds += time.perf_counter() - t0
            log.info(
                "%s epoch %d/%d  loss %.4f  val %s  sparsity %.2f%%  %.1fs",
                phase, epoch + 1, t.epochs, mean_loss, percent(val_acc), 100 * measured["sparsity"], time.perf_counter() - t0,
            )
            self._save(phase, epoch + 1, opt, sched, best, (seconds, train_seconds), ema)

        if ema is not None:
            model.load_state_dict(ema.module.state_dict())
        val_acc = evaluate(model, data.val, t.eval_batch_size, accel)
        if best is not None and best["val_acc"] > val_acc:
            model.load_state_dict(best["model"])
            val_acc = best["val_acc"]
            log.info("%s: keeping epoch %d, the best on validation (%.2f%%)", phase, best["epoch"], 100 * val_acc)
        samples = t.epochs * len(data.train)
        return {
            "test_acc": evaluate(model, data.test, t.eval_batch_size, accel),
            "val_acc": val_acc,
            "seconds": seconds,
            "samples_per_second": samples / train_seconds if train_seconds > 0 else None,
            "epochs": t.epochs,
        }

    # ------------------------------------------------------------------ the run
    def run(self) -> dict:
        cfg, model = self.cfg, self.model
        ckpt = self._load()
        if ckpt is not None and ckpt.get("finished"):
            return ckpt["results"]
        resuming_finetune = ckpt is not None and ckpt["phase"] == "finetune"
        if ckpt is not None:
            self.phases, self.epoch_step, self.masks = ckpt["phases"], ckpt["epoch_step"], ckpt["masks"]
            self.prune_curve = ckpt.get("prune_curve", [])
            self.method.load_state_dict(ckpt["method"])
            log.info("Resuming from %s (%s phase, epoch %d).", self.ckpt_path, ckpt["phase"], ckpt["epoch"])
        self.rec = Recorder(
            self.run_dir, self.config_dict, cfg.histograms, purge_step=self.epoch_step + 1 if ckpt else None,
            enabled=self.dist.is_main, rewind=ckpt.get("tb") if ckpt else None,
        )  # fmt: skip
        if resuming_finetune:  # the purge above dropped the curve's points at steps past the resume point
            self.rec.prune_curve(self.prune_curve, from_step=self.epoch_step + 1)
        try:
            if not resuming_finetune:
                self.method.attach(model)
                if ckpt is not None:
                    model.load_state_dict(ckpt["model"])
                self.phases["train"] = self._fit("train", cfg.train, True, ckpt)
                self.rec.scalars({"test/acc": self.phases["train"]["test_acc"]}, self.epoch_step)

                t0 = time.perf_counter()
                self.masks = self.method.masks(model, cfg.prune)
                self.method.detach(model)
                prune_seconds = time.perf_counter() - t0
                self._run_prune_curve()  # on a copy of the trained model, before the masks
                t0 = time.perf_counter()
                tail = heaviest_tail(model, self.masks)
                apply_masks(model, self.masks)
                self.phases["prune"] = {
                    "test_acc": evaluate(model, self.data.test, cfg.train.eval_batch_size, self.accel),
                    "val_acc": evaluate(model, self.data.val, cfg.train.eval_batch_size, self.accel),
                    "seconds": prune_seconds + time.perf_counter() - t0,
                }
                warning = damage_warning(
                    self.phases["train"]["val_acc"], self.phases["prune"]["val_acc"], self.data.num_classes, tail, cfg.prune
                )
                if warning:
                    log.warning(warning)
                    self.phases["prune"]["warning"] = warning
                ckpt = None
            else:
                model.load_state_dict(ckpt["model"])
            self.phases["finetune"] = self._fit("finetune", cfg.finetune, False, ckpt)
            final = {"test_acc": self.phases["finetune"]["test_acc"], **measure(model, self.data.input_shape)}
            layers = final.pop("layers")
            final.update({"slim_max_abs_diff": None, "speedup_measured": None})
            speed = self._slim_and_time(final)
            self.rec.scalars({"test/acc": final["test_acc"]}, self.epoch_step)
            self.rec.layer_sparsity({**final, "layers": layers}, self.epoch_step)
            self.rec.final_measures(final, self.epoch_step)
            self.rec.hparams(final)
            results = {
                "status": "finished",
                "final": final,
                "phases": self.phases,
                "prune_curve": self.prune_curve,
                "layers": layers,
                "method": self.method.report(),
                "speed": speed,
                "config": self.config_dict,
                "environment": {
                    "torch": torch.__version__, "device": str(self.device), "threads": torch.get_num_threads(),
                    "accel": self.accel.describe(), "machine": _machine(self.device),
                },  # fmt: skip
            }
            self.rec.results(results)
            self._mark_finished(results)
            return results
        finally:
            self.rec.close()

    def _run_prune_curve(self) -> None:
        curve = self.cfg.curve
        if not curve.fractions:
            return
        t0 = time.perf_counter()
        self.prune_curve = prune_curve(
            self.model, curve, lambda m: evaluate(m, self.data.test, self.cfg.train.eval_batch_size, self.accel)
        )
        self.rec.prune_curve(self.prune_curve)
        log.info(
            "prune curve (%s, no finetuning, %.1fs): %s", Granularity(curve.granularity).value, time.perf_counter() - t0,
            "  ".join(f"{100 * p['fraction']:g}% -> {100 * p['test_acc']:.2f}%" for p in self.prune_curve),
        )  # fmt: skip

    # ------------------------------------------------------------------ slim model and speed
    def _slim_and_time(self, final: dict) -> dict | None:
        """Slim the final model, check it, save slim.pt, time it; fills `final` in place.

        A failure here never costs the run its results: the reason goes to
        final.slim_error (or speed_error) and the run finishes.
        """
        m = self.cfg.measure
        if not m.slim or not self.dist.is_main:  # measured once, on rank 0
            return None
        model, shape = self.model, self.data.input_shape
        examples = self.data.test.examples(256) if len(self.data.test) else self.data.val.examples(256)
        try:
            result = slim_model(model, examples, fold=m.fold_bias)
            slimmed = result.model
            final["slim_max_abs_diff"] = max_abs_diff(model, slimmed, examples)
            final["flops_slim"] = dense_flops(slimmed, shape)
            final["params_slim"] = count_nonzero(slimmed)[0]
            final["slim_architecture"] = architecture(slimmed)
            final["slim_folded_units"] = result.folded
            if result.standalone is not True:
                final["slim_standalone"] = result.standalone
                log.warning("slim.pt needs sparsity_bench to load: %s", result.standalone)
            if result.folded == 0 and final["flops_slim"] != final["flops_structural"]:
                log.warning(
                    "slimmed model: FlopCounterMode gives %d FLOPs, the structural count %d",
                    final["flops_slim"], final["flops_structural"],
                )  # fmt: skip
            with torch.no_grad():
                scale = float(model.eval()(examples).abs().max())
            if final["slim_max_abs_diff"] > 1e-4 * max(scale, 1.0):
                log.warning("the slimmed model differs from the masked one: max |logit diff| %.3g", final["slim_max_abs_diff"])
            save_slim(slimmed, self.run_dir / "slim.pt")
        except Exception as err:  # noqa: BLE001  (whatever went wrong, the run keeps its results)
            final["slim_error"] = f"{type(err).__name__}: {err}"
            log.warning("slimming failed (%s); the run's results are kept without it", final["slim_error"])
            return None
        if not m.speed:
            return None
        try:
            speed = self._time(model, slimmed, examples, self.device)
            if m.also_cpu and self.device.type != "cpu":
                speed["cpu"] = self._time(model, slimmed, examples.cpu(), torch.device("cpu"))
            at = 256 if 256 in m.batch_sizes else max(m.batch_sizes)
            speed["speedup_batch"] = at
            timed = speed[f"batch_{at}"]
            final["speedup_measured"], final["speedup_steady"] = timed["speedup"], timed["steady"]
            if not timed["steady"]:
                low, high = timed["speedup_quartiles"]
                log.warning(
                    "the measured speedup is unsteady (its rounds' quartiles %.2fx and %.2fx): the machine was busy, so read it "
                    "as noise; measure.threads=1 and fewer jobs beside the run give steady timings.", low, high,
                )
            return speed
        except Exception as err:  # noqa: BLE001
            final["speed_error"] = f"{type(err).__name__}: {err}"
            log.warning("speed measurement failed (%s)", final["speed_error"])
            return None

    def _time(self, model: nn.Module, slimmed: nn.Module, examples: torch.Tensor, device: torch.device) -> dict:
        m = self.cfg.measure
        threads = torch.get_num_threads()
        if m.threads:
            torch.set_num_threads(m.threads)
        try:
            speed = model_speed(model, slimmed, examples, device, m.batch_sizes, m.repeats, m.warmup)
            if m.csr:
                csr = csr_linear_speed(model, examples, device, max(m.batch_sizes), m.repeats, m.warmup)
                speed["csr_linear"] = csr
                speed["csr_linear_speedup"] = None if csr is None else csr["speedup"]
        finally:
            torch.set_num_threads(threads)
        return speed

    def _mark_finished(self, results: dict) -> None:
        self._write_checkpoint({"finished": True, "results": results, "model": self.model.state_dict(), "masks": self.masks})
