"""What a run leaves behind: TensorBoard events, results.json and the console summary.

(Named run_log, not logging, so that it never shadows the standard library.)
"""
from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .atomic import atomic_path
from .metrics.sparsity import prunable_layers

log = logging.getLogger("sparsity_bench")

# The same flat hparam keys in every run, so TensorBoard's hparams table compares
# runs of different methods side by side (method-specific keys would split it).
HPARAM_KEYS = (
    "model.name", "dataset.name", "method.name", "method.lam", "method.target_sparsity",
    "seed", "train.epochs", "train.lr", "train.batch_size", "finetune.epochs",
    "prune.rule", "prune.threshold",
)  # fmt: skip
HPARAM_METRICS = (
    "final/test_acc", "final/sparsity", "final/flops_effective", "final/params_nonzero", "final/speedup_measured",
)  # fmt: skip


def _lookup(cfg: dict, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if node is None:
        return "none"
    return node if isinstance(node, (int, float, str, bool)) else str(node)


def write_json_atomic(path: Path, obj: Any) -> None:
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(obj, f, indent=2, default=str)
        f.flush()
        os.fsync(f.fileno())


EVENTS_GLOB = "events.out.tfevents.*"


def rewind_events(tb_dir: Path, sizes: dict[str, int]) -> None:
    """Put tb/ back to what it held when a checkpoint was written (sizes from Recorder.mark).

    Events files are append-only, so cutting each back to its size at the checkpoint
    drops exactly what was written after it, whatever its step; files that did not
    exist then (from a later attempt) go.
    """
    for path in tb_dir.glob(EVENTS_GLOB):
        keep = sizes.get(path.name)
        if keep is None:
            path.unlink()
        elif path.stat().st_size > keep:
            os.truncate(path, keep)


class _NoWriter:
    """Stands in for the SummaryWriter on ranks other than 0: they record nothing."""

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: None


class Recorder:
    """TensorBoard writer plus results.json for one run directory.

    enabled=False (every rank but 0 under torchrun) records nothing. On resume, `rewind`
    (the checkpoint's mark) first cuts tb/ back to the checkpoint; purge_step makes
    TensorBoard drop older events at that step and later ones too.
    """

    def __init__(
        self, run_dir: Path, config: dict, histograms: bool = True, purge_step: int | None = None,
        enabled: bool = True, rewind: dict[str, int] | None = None,
    ):  # fmt: skip
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir = run_dir
        self.config = config
        self.with_histograms = histograms
        self.enabled = enabled
        if not enabled:
            self.writer = _NoWriter()
            return
        if rewind is not None and (run_dir / "tb").is_dir():
            rewind_events(run_dir / "tb", rewind)
        self.writer = SummaryWriter(log_dir=str(run_dir / "tb"), purge_step=purge_step)

    def mark(self) -> dict[str, int]:
        """Flush, then the size of every events file: what a checkpoint written now keeps of tb/."""
        if not self.enabled:
            return {}
        self.writer.flush()
        return {p.name: p.stat().st_size for p in (self.run_dir / "tb").glob(EVENTS_GLOB)}

    def scalars(self, values: dict[str, float], step: int) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def layer_sparsity(self, measured: dict, step: int) -> None:
        for layer in measured["layers"]:
            self.writer.add_scalar(f"sparsity/{layer['name']}", 1 - layer["nonzero"] / layer["params"], step)
        self.writer.add_scalar("sparsity/total", measured["sparsity"], step)
        self.writer.add_scalar("flops/effective", measured["flops_effective"], step)
        self.writer.add_scalar("flops/structural", measured["flops_structural"], step)
        self.writer.add_scalar("flops/effective_ratio", measured["flops_effective"] / measured["flops_dense"], step)

    def prune_curve(self, points: list[dict], from_step: int = 0) -> None:
        """The one-shot pruning curve: prune_curve/test_acc and prune_curve/sparsity at step = round(100 * fraction)."""
        for p in points:
            step = round(100 * p["fraction"])
            if step >= from_step:
                self.writer.add_scalar("prune_curve/test_acc", p["test_acc"], step)
                self.writer.add_scalar("prune_curve/sparsity", p["sparsity"], step)

    def final_measures(self, final: dict, step: int) -> None:
        """FLOPs of the slimmed model and the measured speedup, when they were measured."""
        if final.get("flops_slim") is not None:
            self.writer.add_scalar("flops/slim", final["flops_slim"], step)
            self.writer.add_scalar("flops/slim_ratio", final["flops_slim"] / final["flops_dense"], step)
        if final.get("speedup_measured") is not None:
            self.writer.add_scalar("speed/speedup_measured", final["speedup_measured"], step)

    def weight_histograms(self, model: nn.Module, step: int) -> None:
        self.histograms({f"weights/{name}": m.weight for name, m in prunable_layers(model)}, step)

    def histograms(self, values: dict[str, torch.Tensor], step: int) -> None:
        if not self.with_histograms:
            return
        for tag, value in values.items():
            self.writer.add_histogram(tag, value.detach().float().cpu(), step)

    def hparams(self, final: dict) -> None:
        """The run's hparams with its final metrics, written into this run's own events file."""
        from torch.utils.tensorboard.summary import hparams

        if not self.enabled:
            return
        hp = {k: _lookup(self.config, k) for k in HPARAM_KEYS}
        values = {k: final.get(k.split("/", 1)[1]) for k in HPARAM_METRICS}
        metrics = {k: math.nan if v is None else float(v) for k, v in values.items()}
        for summary in hparams(hp, metrics):
            self.writer.file_writer.add_summary(summary)
        for k, v in metrics.items():
            self.writer.add_scalar(k, v)

    def results(self, results: dict) -> Path:
        path = self.run_dir / "results.json"
        if self.enabled:
            write_json_atomic(path, results)
        return path

    def close(self) -> None:
        self.writer.close()


def _fmt_flops(f: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if f >= div:
            return f"{f / div:.2f}{unit}"
    return f"{f:.0f}"


def percent(acc: float | None) -> str:
    """An accuracy for the log: "98.12%", or "n/a" where there is no split to measure it on."""
    return "n/a" if acc is None else f"{100 * acc:.2f}%"


def summary_table(results: dict, run_dir: Path) -> str:
    """The console summary: accuracy per phase, sparsity, architecture, FLOPs, per-layer detail."""
    final, phases = results["final"], results["phases"]
    lines = ["", "phase      test acc   val acc   seconds   samples/s"]
    for name, p in phases.items():
        sps = p.get("samples_per_second")
        lines.append(
            f"{name:<10} {100 * p['test_acc']:>7.2f}%  {percent(p['val_acc']):>8}  {p['seconds']:>7.1f}"
            f"   {'' if sps is None else f'{sps:>9.0f}'}"
        )
    lines += [
        "",
        f"{'layer':<16} {'units kept':>12} {'non-zero':>17} {'FLOPs dense':>12} {'effective':>10} {'structural':>10}",
    ]
    for layer in results["layers"]:
        lines.append(
            f"{layer['name']:<16} {layer['units_kept']:>5}/{layer['units_total']:<6} "
            f"{layer['nonzero']:>8}/{layer['params']:<8} {_fmt_flops(layer['flops_dense']):>12} "
            f"{_fmt_flops(layer['flops_effective']):>10} {_fmt_flops(layer.get('flops_structural', 0)):>10}"
        )
    if results.get("prune_curve"):
        lines += ["", "one-shot pruning of the trained model, no finetuning (curve.*):"]
        lines.append("  ".join(f"{100 * p['fraction']:g}%: {100 * p['test_acc']:.2f}%" for p in results["prune_curve"]))
    ratio = final["flops_dense"] / max(final["flops_effective"], 1)
    lines += [
        "",
        f"test accuracy {100 * final['test_acc']:.2f}%   sparsity {100 * final['sparsity']:.2f}% "
        f"({final['params_nonzero']:,} of {final['params_total']:,} weights non-zero)",
        f"architecture {final['architecture']}   FLOPs {_fmt_flops(final['flops_dense'])} dense -> "
        f"{_fmt_flops(final['flops_effective'])} effective ({ratio:.1f}x fewer)",
        _slim_line(final, results.get("speed")),
        f"run directory {run_dir}",
    ]
    return "\n".join(lines)


def _slim_line(final: dict, speed: dict | None) -> str:
    """The slimmed model: its FLOPs, its agreement with the masked model, and the measured speedup."""
    if final.get("slim_error"):
        return f"slim model: failed ({final['slim_error']})"
    if final.get("flops_slim") is None:
        return "slim model: not measured (measure.slim=false)"
    text = (
        f"slim model {final.get('slim_architecture', '?')}: FLOPs {_fmt_flops(final['flops_slim'])} "
        f"({final['flops_dense'] / max(final['flops_slim'], 1):.1f}x fewer than dense), "
        f"max |logit diff| {final['slim_max_abs_diff']:.1e}"
    )
    if final.get("speed_error"):
        return text + f"; speed: failed ({final['speed_error']})"
    if final.get("speedup_measured") is None or not speed:
        return text
    batch = f"batch_{speed['speedup_batch']}"
    t = speed[batch]
    text += (
        f"\nmeasured speedup {final['speedup_measured']:.2f}x on {speed['device']} at {batch.replace('_', ' ')} "
        f"({t['dense_ms']:.2f} ms dense -> {t['slim_ms']:.2f} ms slim)"
    )
    if t.get("steady") is False:
        text += " UNSTEADY, the machine was busy: quartiles {:.2f}x-{:.2f}x".format(*t["speedup_quartiles"])
    if speed.get("csr_linear_speedup") is not None:
        text += f"; CSR Linear layers {speed['csr_linear_speedup']:.2f}x vs dense"
    return text
