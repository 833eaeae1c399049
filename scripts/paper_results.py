"""Write docs/RESULTS.md: each paper row next to what our presets measured.

    python scripts/paper_results.py outputs/reproduce [--out docs/RESULTS.md]

Reads the run directories under the given folder (scripts/reproduce_mnist.sh puts
each preset's runs in <folder>/<preset>/seed<k>), and for every paper row prints
the paper's number, ours per seed (error, architecture, non-zero weights, FLOPs),
whether the project's target is met, the exact command, the wall time and the
machine. Rows without runs are listed as not run, never guessed.

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
    met: Optional[Callable[[dict], bool]]  # None: the paper gives no number to check


def _err(f: dict) -> float:
    return 100 * (1 - f["test_acc"])


def _nz(f: dict) -> float:
    return 100 * f["params_nonzero"] / f["params_total"]


def _flops(f: dict) -> float:
    return 100 * f.get("flops_structural", f["flops_effective"]) / f["flops_dense"]


ROWS = [
    PaperRow("l0_lenet300_mnist", "LeNet-300-100", "L0, lambda 0.1/N", "219-214-100 at 1.4% error",
             "error <= 1.5%, no layer larger", lambda f: _err(f) <= 1.5 and no_layer_larger(f["architecture"], "219-214-100")),
    PaperRow("l0sep_lenet300_mnist", "LeNet-300-100", "L0-sep", "266-88-33 at 1.6% error",
             "error <= 1.8%, no layer larger", lambda f: _err(f) <= 1.8 and no_layer_larger(f["architecture"], "266-88-33")),
    PaperRow("l0_lenet5_mnist", "LeNet-5", "L0, lambda 0.1/N", "20-25-45-462 at 0.9% error",
             "error <= 1.0%, no layer larger", lambda f: _err(f) <= 1.0 and no_layer_larger(f["architecture"], "20-25-45-462")),
    PaperRow("l0sep_lenet5_mnist", "LeNet-5", "L0-sep", "9-18-65-25 at 1.0% error",
             "error <= 1.1%, no layer larger", lambda f: _err(f) <= 1.1 and no_layer_larger(f["architecture"], "9-18-65-25")),
    PaperRow("hoyer_lenet300_mnist", "LeNet-300-100", "Hoyer-Square", "~98.4% accuracy, fewer non-zeros than sparse VD",
             ">= 98.2% with <= 2% non-zero", lambda f: 100 * f["test_acc"] >= 98.2 and _nz(f) <= 2.0),
    PaperRow("hoyer_lenet5_mnist", "LeNet-5", "Hoyer-Square", "~99.2% accuracy",
             ">= 99.1% with <= 1% non-zero", lambda f: 100 * f["test_acc"] >= 99.1 and _nz(f) <= 1.0),
    PaperRow("group_hoyer_lenet5_mnist", "LeNet-5", "Group-HS", "fewer FLOPs than group lasso",
             ">= 99.0% with <= 10% of dense FLOPs", lambda f: 100 * f["test_acc"] >= 99.0 and _flops(f) <= 10.0),
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


def _results(run: Run) -> dict:
    return json.loads((run.path / "results.json").read_text())


def _phases(run: Run) -> dict:
    return _results(run).get("phases", {})


def _seconds(run: Run) -> float:
    return sum(p.get("seconds") or 0 for p in _phases(run).values())


def _schedule(run: Run) -> str:
    """Epochs actually run, e.g. "250+50" (train + finetune): shortened runs show here."""
    phases = _phases(run)
    train, finetune = (phases.get(k, {}).get("epochs") or 0 for k in ("train", "finetune"))
    return f"{train}+{finetune}" if finetune else f"{train}"


def _machine(run: Run) -> str:
    env = _results(run).get("environment", {})
    parts = [env.get("machine"), env.get("device"), f"{env['threads']} threads" if env.get("threads") else None, f"torch {env.get('torch')}"]
    return ", ".join(p for p in parts if p)


def row_lines(row: PaperRow, runs: list[Run]) -> list[str]:
    if not runs:
        return [f"| {row.model} | {row.method} | {row.paper} | {row.target} | not run | | | | | | |"]
    lines = []
    for run in sorted(runs, key=lambda r: str(r.seed)):
        f = run.final
        met = "n/a" if row.met is None else "yes" if row.met(f) else "no"
        flops = f"{_flops(f):.1f}%"
        lines.append(
            f"| {row.model} | {row.method} | {row.paper} | {row.target} | {_err(f):.2f}% | {f['architecture']} | "
            f"{_nz(f):.2f}% | {flops} | {_schedule(run)} | {met} | seed {run.seed}, {_seconds(run) / 60:.0f} min |"
        )
    return lines


START, END = "<!-- paper table: written by scripts/paper_results.py -->", "<!-- end of paper table -->"


def table(root: Path) -> str:
    runs, skipped = collect([root])
    by_preset: dict[str, list[Run]] = {}
    for run in runs:
        preset = run.path.relative_to(root).parts[0]
        by_preset.setdefault(preset, []).append(run)
    out = [
        START,
        "Every row: the paper's number, then ours (test error, units kept per layer, non-zero weights,",
        "structural FLOPs as a share of dense, epochs run as train+finetune, whether the project's",
        "target is met), one line per seed.",
        "",
        "| model | method | paper | target | error | architecture | non-zero | FLOPs | epochs | met | run |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in ROWS:
        out += row_lines(row, by_preset.get(row.preset, []))
    out += ["", "Commands and machines:", ""]
    for row in ROWS:
        for run in sorted(by_preset.get(row.preset, []), key=lambda r: str(r.seed)):
            out.append(f"- `{_command(run)}` ({_machine(run)})")
    if skipped:
        out += ["", "Runs not counted:", ""] + [f"- {s.path}: {s.reason}" for s in skipped]
    return "\n".join(out + [END])


def write(root: Path, page: str = "") -> str:
    """The results page: `page` (the current file's text) with its table replaced, or a new page."""
    if START in page and END in page:
        head, rest = page.split(START, 1)
        return head + table(root) + rest.split(END, 1)[1]
    return "# Results on real MNIST\n\n" + table(root) + "\n" + page


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs/RESULTS.md"))
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        raise SystemExit(f"error: {args.root} is not a directory; run scripts/reproduce_mnist.sh first.")
    text = write(args.root, args.out.read_text() if args.out.is_file() else "")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
