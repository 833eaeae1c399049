"""What a run directory holds before a run starts in it.

Can it be written; does it hold a finished run (then there is nothing to train); does
it hold a checkpoint of the same configuration (then the run resumes from it) or of
another one (then it is refused, instead of resuming a different experiment).
Reading this needs no torch unless a checkpoint must be opened.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import RunDirError

CHECKPOINT = Path("checkpoints") / "last.pt"  # a run's checkpoint, inside its directory

# Keys a resumed run may change: how a run is shown, where its data is read from, CPU
# threads and what is measured after training, never what is trained. (Not device: a
# checkpoint's random generator states belong to its device.)
MAY_CHANGE = (
    "progress", "threads", "histograms", "measure", "dataset.root", "dataset.download", "dataset.verify",
)  # fmt: skip


def output_problem(path: str | Path) -> str | None:
    """Why a run could not write `path` (created with its parents), or None when it can.

    Tried for real, leaving nothing behind: a temporary directory is made (and
    removed) in the nearest directory that exists, or a temporary file in `path`
    itself. Its name is unique, so runs starting side by side never disturb each other.
    """
    target = Path(path).absolute()
    existing = next(p for p in (target, *target.parents) if p.exists())
    if not existing.is_dir():
        return f"Cannot create the output directory {target}: {existing} is a file, not a directory."
    try:
        if existing == target:
            tempfile.TemporaryFile(dir=target).close()
        else:
            os.rmdir(tempfile.mkdtemp(prefix=".write-check-", dir=existing))
    except OSError as err:
        return f"Cannot create the output directory {target}: {err.strerror or err} ({existing})."
    return None


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(node, dict):
        return {prefix: node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        out.update(_flat(value, f"{prefix}{key}." if isinstance(value, dict) else f"{prefix}{key}"))
    return out


def config_difference(saved: dict, current: dict) -> str | None:
    """The first key (outside MAY_CHANGE) whose value differs, described; None when they agree."""
    a, b = _flat(saved), _flat(current)

    def may_change(key: str) -> bool:
        return any(key == k or key.startswith(k + ".") for k in MAY_CHANGE)

    for key in sorted(set(a) | set(b)):
        if may_change(key) or a.get(key, "<unset>") == b.get(key, "<unset>"):
            continue
        return f"{key} is {b.get(key, '<unset>')!r} now but was {a.get(key, '<unset>')!r}"
    return None


@dataclass
class Existing:
    finished: bool
    results: dict | None  # results.json of a finished run


def existing_run(run_dir: str | Path, config: dict) -> Existing | None:
    """What run_dir holds for a run of `config`: None (nothing), a finished run, or one to resume.

    Raises RunDirError when it holds a run of another configuration, or a checkpoint
    that cannot be read.
    """
    run_dir = Path(run_dir).absolute()
    results_path, ckpt_path = run_dir / "results.json", run_dir / CHECKPOINT
    results = None
    try:
        results = json.loads(results_path.read_text())
    except (OSError, ValueError):
        pass
    if isinstance(results, dict) and results.get("status") == "finished":
        diff = config_difference(results.get("config") or {}, config)
        if diff:
            raise RunDirError(
                f"{run_dir} holds a finished run of another configuration ({diff}); "
                "choose another hydra.run.dir for this one."
            )
        return Existing(finished=True, results=results)
    if not ckpt_path.is_file():
        return None
    import torch

    try:
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same advice
        raise RunDirError(
            f"Cannot read the checkpoint {ckpt_path} ({type(err).__name__}); delete it to start this run over."
        ) from None
    saved = state.get("config") if not state.get("finished") else state.get("results", {}).get("config")
    diff = config_difference(saved or {}, config)
    if diff:
        raise RunDirError(
            f"{run_dir} holds a checkpoint of another configuration ({diff}); rerun with the same "
            "overrides to resume it, or choose another hydra.run.dir."
        )
    if state.get("finished"):
        return Existing(finished=True, results=state.get("results"))
    return Existing(finished=False, results=None)


def finished_line(run_dir: str | Path, results: dict | None) -> str:
    """The one line for a run that is already finished."""
    acc = (results or {}).get("final", {}).get("test_acc")
    acc_text = f" (test accuracy {100 * acc:.2f}%)" if isinstance(acc, (int, float)) else ""
    return (
        f"{Path(run_dir).absolute()} holds a finished run{acc_text}: nothing to train; its results are in "
        "results.json there (choose another hydra.run.dir to train again)."
    )
