"""Write docs/RESULTS.md: each paper row next to what our presets measured.

    python scripts/paper_results.py outputs/reproduce [--out docs/RESULTS.md] [--record docs/results/paper_runs.json]

Reads the run directories under the given folder (scripts/reproduce_mnist.sh puts
each preset's runs in <folder>/<preset>/seed<k>), adds what each run measured to the
record file (one entry per preset, seed, schedule and command; a new run replaces the
entry it repeats), and for every paper row prints the paper's number, ours per recorded run
(error, architecture, non-zero weights, FLOPs; then the runs of the project's own presets
aimed at the same target, named), whether the project's target is met,
the exact command, the wall time and the machine. Rows without runs are listed as not
run, never guessed. The record is kept because runs take hours and their directories
do not outlive the machine they ran on: the page can be rebuilt from it alone.

docs/RESULTS.md also holds text written by hand (what the numbers mean, the best
points found beyond the papers): only the part between the two marker lines below
is rewritten, so rerunning the script never loses it.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from sparsity_bench.report import Run, collect  # noqa: E402


def _units(arch: str) -> list[int]:
    return [int(u) for u in arch.split("-")] if arch else []


def no_layer_larger(arch: str, bound: str) -> bool:
    ours, ref = _units(arch), _units(bound)
    return len(ours) == len(ref) and all(a <= b for a, b in zip(ours, ref))


@dataclass
class PaperRow:
    preset: str
    model: str
    method: str
    paper: str
    target: str
    met: Optional[Callable[[dict], bool]]  # on a record; None: the paper gives no number to check
    # the project's own presets aimed at the same target, listed under the paper recipe's runs
    ours: tuple[str, ...] = ()

    @property
    def presets(self) -> tuple[str, ...]:
        return (self.preset, *self.ours)


ROWS = [
    PaperRow("l0_lenet300_mnist", "LeNet-300-100", "L0, lambda 0.1/N", "219-214-100 at 1.4% error",
             "error <= 1.5%, no layer larger", lambda r: r["error"] <= 1.5 and no_layer_larger(r["architecture"], "219-214-100")),
    PaperRow("l0sep_lenet300_mnist", "LeNet-300-100", "L0-sep", "266-88-33 at 1.6% error",
             "error <= 1.8%, no layer larger", lambda r: r["error"] <= 1.8 and no_layer_larger(r["architecture"], "266-88-33")),
    PaperRow("l0_lenet5_mnist", "LeNet-5", "L0, lambda 0.1/N", "20-25-45-462 at 0.9% error",
             "error <= 1.0%, no layer larger", lambda r: r["error"] <= 1.0 and no_layer_larger(r["architecture"], "20-25-45-462")),
    PaperRow("l0sep_lenet5_mnist", "LeNet-5", "L0-sep", "9-18-65-25 at 1.0% error",
             "error <= 1.1%, no layer larger", lambda r: r["error"] <= 1.1 and no_layer_larger(r["architecture"], "9-18-65-25")),
    PaperRow("hoyer_lenet300_mnist", "LeNet-300-100", "Hoyer-Square", "~98.4% accuracy, fewer non-zeros than sparse VD",
             ">= 98.2% with <= 2% non-zero", lambda r: r["error"] <= 1.8 and r["nonzero"] <= 2.0,
             ours=("best_hoyer_lenet300_mnist",)),
    PaperRow("hoyer_lenet5_mnist", "LeNet-5", "Hoyer-Square", "~99.2% accuracy",
             ">= 99.1% with <= 1% non-zero", lambda r: r["error"] <= 0.9 and r["nonzero"] <= 1.0),
    PaperRow("group_hoyer_lenet5_mnist", "LeNet-5", "Group-HS", "fewer FLOPs than group lasso",
             ">= 99.0% with <= 10% of dense FLOPs", lambda r: r["error"] <= 1.0 and r["flops"] <= 10.0,
             ours=("best_group_hoyer_lenet5_mnist",)),
    PaperRow("group_hoyer_lenet300_mnist", "LeNet-300-100", "Group-HS", "more neurons pruned than group lasso",
             "(no numeric target)", None),
    PaperRow("td_lenet5_mnist", "LeNet-5", "Targeted Dropout (ramped, weight)", "small loss after one-shot pruning",
             "(see the prune curve)", None),
]


def _command(run: Run) -> str:
    overrides = run.path / ".hydra" / "overrides.yaml"
    if not overrides.is_file():
        return "(not recorded)"
    import yaml  # comes with Hydra

    return "python -m sparsity_bench " + " ".join(yaml.safe_load(overrides.read_text()) or [])


def _schedule(phases: dict) -> str:
    """Epochs actually run, e.g. "250+50" (train + finetune): shortened runs show here."""
    train, finetune = (phases.get(k, {}).get("epochs") or 0 for k in ("train", "finetune"))
    return f"{train}+{finetune}" if finetune else f"{train}"


def _machine(env: dict) -> str:
    parts = [env.get("machine"), env.get("device"), f"{env['threads']} threads" if env.get("threads") else None, f"torch {env.get('torch')}"]
    return ", ".join(p for p in parts if p)


def record(preset: str, run: Run) -> dict:
    """What the table shows of one run (percentages rounded to what it prints)."""
    f = run.final
    results = json.loads((run.path / "results.json").read_text())  # phases and environment, read once
    phases = results.get("phases", {})
    flops = f.get("flops_structural", f["flops_effective"])
    return {
        "preset": preset,
        "seed": run.seed,
        "error": round(100 * (1 - f["test_acc"]), 2),
        "architecture": f["architecture"],
        "nonzero": round(100 * f["params_nonzero"] / f["params_total"], 2),
        "flops": round(100 * flops / f["flops_dense"], 1),
        "epochs": _schedule(phases),
        "minutes": round(sum(p.get("seconds") or 0 for p in phases.values()) / 60),
        "command": _command(run),
        "machine": _machine(results.get("environment", {})),
    }


def merge(old: list[dict], new: list[dict]) -> list[dict]:
    """The old records with the new ones added; a new run replaces one of the same preset, seed, epochs
    and command (a preset run with some of its values overridden is another run, kept beside it)."""
    key = lambda r: (r["preset"], str(r["seed"]), r["epochs"], r.get("command", ""))  # noqa: E731
    merged = {key(r): r for r in old}
    merged.update({key(r): r for r in new})
    return sorted(merged.values(), key=key)


def row_lines(row: PaperRow, records: list[dict]) -> list[str]:
    if not records:
        return [f"| {row.model} | {row.method} | {row.paper} | {row.target} | not run | | | | | | |"]
    lines = []
    for r in records:
        met = "n/a" if row.met is None else "yes" if row.met(r) else "no"
        recipe = "" if r["preset"] == row.preset else f", `{r['preset']}`"
        lines.append(
            f"| {row.model} | {row.method} | {row.paper} | {row.target} | {r['error']:.2f}% | {r['architecture']} | "
            f"{r['nonzero']:.2f}% | {r['flops']:.1f}% | {r['epochs']} | {met} | seed {r['seed']}, {r['minutes']} min{recipe} |"
        )
    return lines


START, END = "<!-- paper table: written by scripts/paper_results.py -->", "<!-- end of paper table -->"


def records_under(root: Path) -> tuple[list[dict], list]:
    """Records of the finished runs under root (<root>/<preset>/<seed dir>), and the runs skipped."""
    runs, skipped = collect([root])
    return [record(run.path.relative_to(root).parts[0], run) for run in runs], skipped


def table(records: list[dict], skipped: list = ()) -> str:
    out = [
        START,
        "Every row: the paper's number, then ours (test error, units kept per layer, non-zero weights,",
        "structural FLOPs as a share of dense, epochs run as train+finetune, whether the project's",
        "target is met), one line per run.",
        "",
        "| model | method | paper | target | error | architecture | non-zero | FLOPs | epochs | met | run |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    of_row = lambda row: [r for preset in row.presets for r in records if r["preset"] == preset]  # noqa: E731
    for row in ROWS:
        out += row_lines(row, of_row(row))
    out += ["", "Commands and machines:", ""]
    for row in ROWS:
        out += [f"- `{r['command']}` ({r['machine']})" for r in of_row(row)]
    if skipped:
        out += ["", "Runs not counted:", ""] + [f"- {s.path}: {s.reason}" for s in skipped]
    return "\n".join(out + [END])


def write(records: list[dict], page: str = "", skipped: list = ()) -> str:
    """The results page: `page` (the current file's text) with its table replaced, or a new page."""
    if START in page and END in page:
        head, rest = page.split(START, 1)
        return head + table(records, skipped) + rest.split(END, 1)[1]
    return "# Results on real MNIST\n\n" + table(records, skipped) + "\n" + page


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs/RESULTS.md"))
    parser.add_argument("--record", type=Path, default=Path("docs/results/paper_runs.json"))
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        raise SystemExit(f"error: {args.root} is not a directory; run scripts/reproduce_mnist.sh first.")
    new, skipped = records_under(args.root)
    old = json.loads(args.record.read_text()) if args.record.is_file() else []
    records = merge(old, new)
    text = write(records, args.out.read_text() if args.out.is_file() else "", skipped)
    for path, content in ((args.record, json.dumps(records, indent=1) + "\n"), (args.out, text)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    print(text)


if __name__ == "__main__":
    main()
