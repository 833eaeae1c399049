"""Summarize a sweep: python -m sparsity_bench.report DIR [DIR ...]

Reads every results.json under the given directories (a multirun directory, a
folder of several, or single run directories), groups the finished runs by their
configuration except the seed, and writes into the first DIR (or --out):

- report.csv: one row per group, means and standard deviations over seeds;
- report.md: the same table in markdown, the plots, and the jobs that were skipped;
- accuracy_vs_sparsity.png, accuracy_vs_flops.png: one line per method, error bars
  for the spread over seeds, and the Pareto front (the runs no other run beats in
  both accuracy and sparsity, or accuracy and FLOPs).

Failed and unfinished jobs are listed, never fatal. Nothing here imports torch.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import statistics
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

# The columns that identify a group first, as (column name, config key).
BASE_KEYS = (
    ("method", "method.name"), ("model", "model.name"), ("dataset", "dataset.name"),
    ("lam", "method.lam"), ("target_sparsity", "method.target_sparsity"),
)  # fmt: skip
# Keys that do not change the experiment's outcome (or are what we average over).
NOT_EXPERIMENT = {
    "seed", "device", "threads", "progress", "histograms",
    "dataset.root", "dataset.download", "dataset.verify",
    "train.eval_batch_size", "finetune.eval_batch_size",
}  # fmt: skip
# Whole sections that only measure the trained model (the prune curve runs on a copy).
NOT_EXPERIMENT_SECTIONS = ("curve.", "measure.")
REQUIRED = ("test_acc", "sparsity", "params_nonzero", "flops_dense", "flops_effective")
RUN_PARTS = {"tb", "checkpoints", ".hydra", ".submitit"}  # inside a run directory, never runs themselves
PLOTS = {"sparsity": "accuracy_vs_sparsity.png", "flops": "accuracy_vs_flops.png"}
CURVE_PLOT = "accuracy_after_pruning.png"  # runs with a prune curve (curve.fractions), e.g. Targeted Dropout's


class ReportError(Exception):
    """A problem with what the user asked for, told in one sentence (details: lines shown before it)."""

    def __init__(self, message: str, details: str = ""):
        super().__init__(message)
        self.details = details


@dataclass
class Run:
    path: Path
    final: dict
    config: dict  # flattened: "method.lam" -> value
    seed: Any
    method: dict = field(default_factory=dict)  # results.json "method": e.g. the lam method.target_sparsity steered to
    curve: dict = field(default_factory=dict)  # results.json "prune_curve": fraction pruned -> test accuracy


@dataclass
class Skipped:
    path: Path
    reason: str


@dataclass
class Group:
    key: tuple  # values of BASE_KEYS then of the extra swept keys
    runs: list[Run] = field(default_factory=list)


# ------------------------------------------------------------------ reading
def _natural(path: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def is_run_dir(path: Path) -> bool:
    """A run (job) directory: it has results.json, or Hydra's config record, or checkpoints."""
    return (path / "results.json").exists() or (path / ".hydra").is_dir() or (path / "checkpoints").is_dir()


def find_run_dirs(root: Path) -> list[Path]:
    """Every run directory at or below root, in natural order (2_... before 10_...)."""
    found = []
    for dirpath, dirnames, _ in os.walk(root):
        here = Path(dirpath)
        if is_run_dir(here):
            found.append(here)
            dirnames.clear()  # a run directory holds no further runs
        else:
            dirnames[:] = [d for d in dirnames if d not in RUN_PARTS]
    return sorted(found, key=_natural)


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """{"method": {"lam": 1e-4}} -> {"method.lam": 1e-4}; lists become strings (hashable)."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    if isinstance(node, list):
        node = json.dumps(node)
    return {prefix[:-1]: node}


def load_run(path: Path) -> Run | Skipped:
    """One run directory as a finished Run, or the reason it is skipped."""
    file = path / "results.json"
    if not file.exists():
        resumable = " (checkpoints/last.pt is there: rerun into this directory to resume)" if (path / "checkpoints" / "last.pt").exists() else ""
        return Skipped(path, f"unfinished: no results.json{resumable}")
    try:
        data = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        return Skipped(path, f"unreadable results.json ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})")
    if not isinstance(data, dict):
        return Skipped(path, "unreadable results.json (not a JSON object)")
    status = data.get("status")
    if status != "finished":
        error = data.get("error")
        first = str(error).splitlines()[0] if error else "no error recorded"
        return Skipped(path, f"{status}: {first}" if status == "failed" else f"status {status!r}: {first}")
    final = data.get("final")
    missing = [k for k in REQUIRED if not isinstance(final, dict) or not isinstance(final.get(k), (int, float))]
    if missing:
        return Skipped(path, f"results.json lacks final.{missing[0]}")
    config = flatten(data.get("config") or {})
    method = data.get("method") if isinstance(data.get("method"), dict) else {}
    points = data.get("prune_curve") if isinstance(data.get("prune_curve"), list) else []
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
    curve = {
        float(pt["fraction"]): float(pt["test_acc"])
        for pt in points if isinstance(pt, dict) and number(pt.get("fraction")) and number(pt.get("test_acc"))
    }  # fmt: skip
    return Run(path, final, config, config.get("seed"), method, curve)


def collect(roots: Sequence[Path]) -> tuple[list[Run], list[Skipped]]:
    runs: list[Run] = []
    skipped: list[Skipped] = []
    seen: set[Path] = set()
    for root in roots:
        for path in find_run_dirs(root):
            if path.resolve() in seen:
                continue
            seen.add(path.resolve())
            item = load_run(path)
            (runs if isinstance(item, Run) else skipped).append(item)
    return runs, skipped


# ------------------------------------------------------------------ grouping
def swept_keys(runs: Sequence[Run]) -> list[str]:
    """Config keys besides BASE_KEYS that take more than one value among the runs that have them."""
    base = {k for _, k in BASE_KEYS}
    values: dict[str, set] = {}
    for run in runs:
        for k, v in run.config.items():
            if k not in base and k not in NOT_EXPERIMENT and not k.startswith(NOT_EXPERIMENT_SECTIONS):
                values.setdefault(k, set()).add(json.dumps(v, sort_keys=True, default=str))
    return sorted(k for k, vs in values.items() if len(vs) > 1)


def _sort_value(v: Any) -> tuple:
    return (0, v, "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0, str(v))


def group_runs(runs: Sequence[Run], extra: Sequence[str]) -> list[Group]:
    """Runs that differ only in their seed (and in NOT_EXPERIMENT keys) form one group."""
    keys = [k for _, k in BASE_KEYS] + list(extra)
    groups: dict[tuple, Group] = {}
    for run in runs:
        key = tuple(run.config.get(k) for k in keys)
        groups.setdefault(key, Group(key)).runs.append(run)
    # method, model, dataset, extra keys, then lam and target sparsity: each method's rows follow its grid
    order = [0, 1, 2, *range(5, 5 + len(extra)), 3, 4]
    out = sorted(groups.values(), key=lambda g: [_sort_value(g.key[i]) for i in order])
    for g in out:
        g.runs.sort(key=lambda r: (_sort_value(r.seed), _natural(r.path)))
    return out


def _mean(xs: Sequence[float]) -> float:
    return statistics.fmean(xs) if xs else math.nan


def _std(xs: Sequence[float]) -> float:
    """Sample standard deviation over seeds; NaN for a single seed (no spread to report)."""
    return statistics.stdev(xs) if len(xs) > 1 else math.nan


def _int(v: float) -> float | int:
    return int(v) if float(v).is_integer() else v


def summarize(group: Group, extra: Sequence[str]) -> dict[str, Any]:
    """The report row of one group."""
    finals = [r.final for r in group.runs]
    col = lambda k: [float(f[k]) for f in finals if isinstance(f.get(k), (int, float))]  # noqa: E731
    row: dict[str, Any] = {name: group.key[i] for i, (name, _) in enumerate(BASE_KEYS)}
    row.update({k: group.key[len(BASE_KEYS) + i] for i, k in enumerate(extra)})
    archs = Counter(str(f["architecture"]) for f in finals if f.get("architecture") is not None)
    flops_eff = _mean(col("flops_effective"))
    flops_dense = Counter(col("flops_dense")).most_common(1)[0][0]
    # a speedup timed on a busy machine (speedup_steady false) is noise: left out of the mean, and counted
    speedups = [float(f["speedup_measured"]) for f in finals if isinstance(f.get("speedup_measured"), (int, float)) and f.get("speedup_steady", True)]
    unsteady = sum(f.get("speedup_steady") is False for f in finals)
    steered = lambda k: [float(r.method[k]) for r in group.runs if isinstance(r.method.get(k), (int, float))]  # noqa: E731
    row.update({
        "n_seeds": len(group.runs),
        "seeds": ",".join(str(r.seed) for r in group.runs),
        "test_acc_mean": _mean(col("test_acc")), "test_acc_std": _std(col("test_acc")),
        "sparsity_mean": _mean(col("sparsity")), "sparsity_std": _std(col("sparsity")),
        "params_nonzero_mean": _mean(col("params_nonzero")),
        "params_total": _int(Counter(col("params_total")).most_common(1)[0][0]) if col("params_total") else math.nan,
        "architecture": archs.most_common(1)[0][0] if archs else "",  # ties: the first seed's
        "flops_dense": _int(flops_dense),
        "flops_effective_mean": flops_eff, "flops_effective_std": _std(col("flops_effective")),
        "flops_reduction": flops_dense / flops_eff if flops_eff > 0 else math.nan,
        "speedup_measured_mean": _mean(speedups) if speedups else None, "speedup_unsteady": unsteady,
        # method.target_sparsity runs: where lam ended, and the sparsity the regularizer reached before the cut
        "lam_final_mean": _mean(steered("lam_final")) if steered("lam_final") else None,
        "sparsity_before_cut_mean": _mean(steered("sparsity_before_cut")) if steered("sparsity_before_cut") else None,
        "prune_curve": mean_curve(group),  # {fraction: accuracy}; the CSV writes it as "fraction:acc%" pairs
        "run_dirs": " ".join(str(r.path) for r in group.runs),
    })  # fmt: skip
    return row


def mean_curve(group: Group) -> dict[float, float]:
    """Test accuracy after one-shot pruning (curve.fractions, no finetuning), mean over the group's seeds."""
    accs: dict[float, list[float]] = {}
    for run in group.runs:
        for fraction, acc in run.curve.items():
            accs.setdefault(fraction, []).append(acc)
    return {f: _mean(accs[f]) for f in sorted(accs)}


# ------------------------------------------------------------------ the Pareto front
def pareto_front(points: Sequence[tuple[float, float]], x: str = "min", y: str = "max") -> list[int]:
    """Indices of the non-dominated points, in order of increasing x.

    x and y say which way is better ("min" or "max"). A point is dominated when
    another is at least as good in both coordinates and better in one; equal points
    do not dominate each other. Points with a NaN coordinate are never on the front.
    """
    if x not in ("min", "max") or y not in ("min", "max"):
        raise ValueError("directions are 'min' or 'max'")
    sx, sy = (1 if x == "min" else -1), (1 if y == "min" else -1)  # as costs: lower is better
    cost = [(sx * px, sy * py) for px, py in points]
    ok = [i for i, (a, b) in enumerate(cost) if not (math.isnan(a) or math.isnan(b))]
    front = [
        i for i in ok
        if not any(cost[j][0] <= cost[i][0] and cost[j][1] <= cost[i][1] and cost[j] != cost[i] for j in ok)
    ]  # fmt: skip
    return sorted(front, key=lambda i: (points[i][0], points[i][1]))


# ------------------------------------------------------------------ tables
def _g(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def _pct(mean: float, std: float) -> str:
    if math.isnan(mean):
        return ""
    return f"{100 * mean:.2f}" + ("" if math.isnan(std) else f" ± {100 * std:.2f}")


def fmt_count(n: float) -> str:
    if n is None or math.isnan(n):
        return ""
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.0f}"


def _speedup(mean: float | None, unsteady: int) -> str:
    """The mean steady speedup, and how many seeds' timings were left out as noise."""
    text = "" if mean is None else f"{mean:.2f}x"
    if unsteady:
        text += f"{' ' if text else ''}({unsteady} unsteady left out)"
    return text


def display_rows(rows: Sequence[dict], extra: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """Headers and string cells for the markdown and terminal tables."""
    headers = ["method", "model", "dataset", "lam", "target", *extra, "seeds", "test acc %", "sparsity %",
               "non-zero", "architecture", "FLOPs dense", "FLOPs eff.", "fewer", "speedup"]  # fmt: skip
    steered = any(r.get("lam_final_mean") is not None for r in rows)
    if steered:  # only sweeps that used method.target_sparsity get these columns
        headers += ["lam final", "before cut %"]
    cells = []
    for r in rows:
        cells.append([
            str(r["method"]), str(r["model"]), str(r["dataset"]), _g(r["lam"]), _g(r["target_sparsity"]),
            *(_g(r[k]) for k in extra), str(r["n_seeds"]),
            _pct(r["test_acc_mean"], r["test_acc_std"]), _pct(r["sparsity_mean"], r["sparsity_std"]),
            fmt_count(r["params_nonzero_mean"]), r["architecture"], fmt_count(r["flops_dense"]),
            fmt_count(r["flops_effective_mean"]), "" if math.isnan(r["flops_reduction"]) else f"{r['flops_reduction']:.1f}x",
            _speedup(r["speedup_measured_mean"], r["speedup_unsteady"]),
        ])  # fmt: skip
        if steered:
            before = r.get("sparsity_before_cut_mean")
            cells[-1] += [_g(r.get("lam_final_mean")), "" if before is None else f"{100 * before:.2f}"]
    return headers, cells


def text_table(headers: Sequence[str], cells: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths)).rstrip()  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(c) for c in cells)])


def markdown_table(headers: Sequence[str], cells: Sequence[Sequence[str]]) -> str:
    esc = lambda s: s.replace("|", "\\|")  # noqa: E731
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(esc(c) for c in row) + " |" for row in cells]
    return "\n".join(out)


def write_csv(path: Path, rows: Sequence[dict]) -> None:
    if not rows:
        return
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: _csv_cell(v) for k, v in r.items()})


def _csv_cell(v: Any) -> Any:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, dict):  # a prune curve: "fraction:accuracy%" pairs
        return " ".join(f"{f:g}:{100 * acc:.2f}" for f, acc in v.items())
    return v


def _shown(path: Path, roots: Sequence[Path]) -> str:
    for root in roots:
        try:
            rel = path.resolve().relative_to(root.resolve())
            return str(rel) if str(rel) != "." else str(path)
        except ValueError:
            continue
    return str(path)


def markdown_report(roots, rows, extra, skipped, plots: Sequence[Path], n_runs: int) -> str:
    headers, cells = display_rows(rows, extra)
    lines = [
        "# Sweep report", "",
        f"{n_runs} finished run(s) in {len(rows)} group(s) from {', '.join(f'`{r}`' for r in roots)}; "
        "accuracy and sparsity are mean ± standard deviation over seeds (in %).", "",
        markdown_table(headers, cells), "",
    ]  # fmt: skip
    if any(r["prune_curve"] for r in rows):
        lines += ["## Test accuracy after one-shot pruning, without finetuning (%)", "",
                  markdown_table(*curve_table(rows, extra)), ""]  # fmt: skip
    for p in plots:
        lines += [f"![{p.stem.replace('_', ' ')}]({p.name})", ""]
    lines += [f"## Skipped jobs ({len(skipped)})", ""]
    lines += [f"- `{_shown(s.path, roots)}`: {s.reason}" for s in skipped] or ["none"]
    return "\n".join(lines) + "\n"


def curve_table(rows: Sequence[dict], extra: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """One line per group that has a prune curve: its accuracy (%) at each fraction pruned."""
    fractions = sorted({f for r in rows for f in r["prune_curve"]})
    cells = [
        [label, *(f"{100 * c[f]:.2f}" if f in c else "" for f in fractions)]
        for label, c in zip(_labels(rows, extra), (r["prune_curve"] for r in rows)) if c
    ]  # fmt: skip
    return ["run", *(f"{100 * f:g}% pruned" for f in fractions)], cells


# ------------------------------------------------------------------ plots
def _labels(rows: Sequence[dict], extra: Sequence[str]) -> list[str]:
    vary_model = len({r["model"] for r in rows}) > 1
    vary_data = len({r["dataset"] for r in rows}) > 1
    return [_series_label(r, extra, vary_model, vary_data) for r in rows]


def _series_label(row: dict, extra: Sequence[str], vary_model: bool, vary_data: bool) -> str:
    parts = [str(row["method"])]
    if vary_model:
        parts.append(str(row["model"]))
    if vary_data:
        parts.append(str(row["dataset"]))
    parts += [f"{k}={_g(row[k])}" for k in extra]
    return " ".join(parts)


MARKERS = "osD^vP*Xph"


def series_color(n: int) -> tuple:
    import matplotlib

    return matplotlib.colormaps["tab10"](n % 10)


def series_marker(n: int) -> str:
    """Shifted by one every ten series, so series n and n + 10 (same colour) differ in marker:
    a 4 x 4 grid sweep gets 16 distinguishable lines."""
    return MARKERS[(n + n // 10) % len(MARKERS)]


def plot(rows: Sequence[dict], extra: Sequence[str], kind: str, path: Path) -> Path:
    """Test accuracy against weights kept (kind="sparsity") or effective FLOPs (kind="flops")."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    if kind == "sparsity":
        xs = [100 * (1 - r["sparsity_mean"]) for r in rows]
        xerr = [100 * r["sparsity_std"] for r in rows]
        xlabel = "weights kept, % of the dense model (fewer = sparser)"
        xfmt = lambda v, _: f"{v:g}%"  # noqa: E731
        title = "Test accuracy vs weights kept"
    else:
        xs = [r["flops_effective_mean"] for r in rows]
        xerr = [r["flops_effective_std"] for r in rows]
        xlabel = "effective FLOPs per example"
        xfmt = lambda v, _: fmt_count(v)  # noqa: E731
        title = "Test accuracy vs effective FLOPs"
    ys = [100 * r["test_acc_mean"] for r in rows]
    yerr = [100 * r["test_acc_std"] for r in rows]
    nan0 = lambda v: 0.0 if math.isnan(v) else v  # noqa: E731

    vary_model = len({r["model"] for r in rows}) > 1
    series: dict[str, list[int]] = {}
    for i, label in enumerate(_labels(rows, extra)):
        series.setdefault(label, []).append(i)

    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=130)
    for n, (label, idx) in enumerate(series.items()):
        idx = sorted(idx, key=lambda i: xs[i])
        ax.errorbar(
            [xs[i] for i in idx], [ys[i] for i in idx],
            xerr=[nan0(xerr[i]) for i in idx], yerr=[nan0(yerr[i]) for i in idx],
            label=label, color=series_color(n), marker=series_marker(n), markersize=5,
            linewidth=1.4, elinewidth=1, capsize=3, alpha=0.9,
        )  # fmt: skip

    # The front, per model and dataset (comparing accuracies across datasets means nothing).
    first = True
    for md in sorted({(r["model"], r["dataset"]) for r in rows}):
        idx = [i for i, r in enumerate(rows) if (r["model"], r["dataset"]) == md]
        front = [idx[j] for j in pareto_front([(xs[i], ys[i]) for i in idx], x="min", y="max")]
        ax.plot([xs[i] for i in front], [ys[i] for i in front], drawstyle="steps-post", color="0.35",
                linestyle="--", linewidth=1, zorder=1)  # fmt: skip
        ax.scatter([xs[i] for i in front], [ys[i] for i in front], s=160, facecolors="none", edgecolors="black",
                   linewidths=1.3, zorder=5, label="Pareto front" if first else None)  # fmt: skip
        first = False
    # The dense model for reference: 100% of the weights, or each model's dense FLOPs.
    dense_x = sorted({(r["model"], r["flops_dense"]) for r in rows}) if kind == "flops" else [("", 100.0)]
    for j, (model, dense) in enumerate(dense_x):
        ax.axvline(dense, color="0.6", linestyle=":", linewidth=1)
        ax.annotate(f"dense {model}" if vary_model and model else "dense", (dense, 1), xycoords=("data", "axes fraction"),
                    xytext=(-3, -4 - 11 * j), textcoords="offset points", ha="right", va="top", fontsize=8, color="0.4")  # fmt: skip

    # Log scale once x spans a factor of 4 or more, labelled at 1-2-5 steps (fewer over many decades).
    finite = [v for v in xs if not math.isnan(v)] + [d for _, d in dense_x]
    if finite and min(finite) > 0 and max(finite) / min(finite) >= 4:
        span = max(finite) / min(finite)
        ax.set_xscale("log")
        xlabel += ", log scale"
        subs = (1.0, 2.0, 3.0, 5.0) if span < 10 else (1.0, 2.0, 5.0) if span < 1e3 else (1.0,)
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
        ax.xaxis.set_minor_locator(LogLocator(base=10, subs="auto"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.xaxis.set_major_formatter(FuncFormatter(xfmt))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy, %")
    ax.set_title(f"{title}  (upper left is better)", fontsize=11)
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", alpha=0.1)
    return _legend_and_save(fig, ax, path, inside="best")


def plot_curves(rows: Sequence[dict], extra: Sequence[str], path: Path) -> Path:
    """Test accuracy after one-shot pruning against the fraction pruned, one line per group (the
    Targeted Dropout paper's evaluation). The fractions sit evenly spaced: 90, 95 and 99% would crowd."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = [r["prune_curve"] for r in rows]
    fractions = sorted({f for c in curves for f in c})
    pos = {f: i for i, f in enumerate(fractions)}
    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=130)
    for n, (label, c) in enumerate((lab, c) for lab, c in zip(_labels(rows, extra), curves) if c):
        ax.plot([pos[f] for f in c], [100 * a for a in c.values()], label=label, color=series_color(n),
                marker=series_marker(n), markersize=5, linewidth=1.4, alpha=0.9)  # fmt: skip
    ax.set_xticks(range(len(fractions)), [f"{100 * f:g}%" for f in fractions])
    ax.set_xlabel("fraction pruned in one shot (smallest magnitude first, no finetuning)")
    ax.set_ylabel("test accuracy, %")
    ax.set_title("Test accuracy after one-shot pruning  (higher is better)", fontsize=11)
    ax.grid(True, alpha=0.3)
    return _legend_and_save(fig, ax, path, inside="lower left")


def _legend_and_save(fig, ax, path: Path, inside: str) -> Path:
    """A few short labels go inside the axes (at `inside`); many or long ones (several swept
    keys) would cover the points, so they go to the right of the axes, whatever their number."""
    import matplotlib.pyplot as plt

    labels = ax.get_legend_handles_labels()[1]
    if len(labels) <= 4 and max(map(len, labels), default=0) <= 40:
        ax.legend(fontsize=8, loc=inside, framealpha=0.85)
    else:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False)
    fig.savefig(path, bbox_inches="tight")  # widened to take a legend beside the axes
    plt.close(fig)
    return path


# ------------------------------------------------------------------ main
def report(roots: Sequence[Path], out: Path, plots: bool = True) -> str:
    """Write report.csv, report.md and the plots into out; return the terminal text."""
    for root in roots:
        if not root.exists():
            raise ReportError(f"{root} does not exist.")
        if not root.is_dir():
            raise ReportError(f"{root} is not a directory; give the multirun directory (or a folder of runs).")
    runs, skipped = collect(roots)
    where = ", ".join(str(r) for r in roots)
    skipped_text = "\n".join(f"  {_shown(s.path, roots)}: {s.reason}" for s in skipped)
    if not runs:
        if skipped:
            raise ReportError(f"none of the {len(skipped)} job(s) under {where} finished (listed above).", skipped_text)
        raise ReportError(f"no run directories under {where}; point it at a directory that `python -m sparsity_bench -m ...` wrote.")
    extra = swept_keys(runs)
    rows = [summarize(g, extra) for g in group_runs(runs, extra)]
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "report.csv", rows)
    notes = []
    written = []
    if plots:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            notes.append("plots skipped: matplotlib is not installed (pip install 'sparsity_bench[report]')")
        else:
            written = [plot(rows, extra, kind, out / name) for kind, name in PLOTS.items()]
            if any(r["prune_curve"] for r in rows):
                written.append(plot_curves(rows, extra, out / CURVE_PLOT))
    (out / "report.md").write_text(markdown_report(roots, rows, extra, skipped, written, len(runs)))

    headers, cells = display_rows(rows, extra)
    text = [text_table(headers, cells), "", f"{len(runs)} finished run(s) in {len(rows)} group(s)."]
    if skipped:
        text += [f"skipped {len(skipped)} job(s):", skipped_text]
    text += notes
    text.append(f"wrote {', '.join(str(out / n) for n in ['report.csv', 'report.md', *(p.name for p in written)])}")
    return "\n".join(text)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m sparsity_bench.report",
        description="Summarize sweeps: a table (report.csv, report.md) and Pareto plots of accuracy vs sparsity and FLOPs.",
    )
    parser.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="multirun directory (or a folder of them, or run directories)")
    parser.add_argument("--out", type=Path, help="where to write the report (default: the first DIR)")
    parser.add_argument("--no-plots", action="store_true", help="only the tables")
    args = parser.parse_args(argv)
    try:
        print(report(args.dirs, args.out or args.dirs[0], plots=not args.no_plots))
    except ReportError as err:
        if err.details:
            print(err.details, file=sys.stderr)
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    except OSError as err:
        print(f"error: cannot write the report: {err.strerror or err} ({err.filename}).", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
