"""The Hydra entry: compose, validate, hand to the pipeline.

Before Hydra starts any job, every configuration the command line asks for (each
value of a sweep) is composed and validated once, and the output directory is
checked, so that a typo or an unwritable path is refused in one sentence before
anything runs, instead of as a stack trace from inside a job. A run directory that
already holds a finished run is reported in one line and not trained again; one
that holds a checkpoint of another configuration is refused.

Under torchrun (several processes) rank 0 resolves the run directory and every rank
uses it; see sparsity_bench.distributed.
"""
from __future__ import annotations

import json
import logging
import os
import re
import secrets
import sys
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import hydra
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from .config import ConfigError, describe_omegaconf_error, register_configs, validate
from .errors import RunDirError, TrainingDiverged, UserError


def conf_dir() -> Path:
    """conf/ of the source checkout, else the copy packaged inside a wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parents[1] / "conf", here / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError("sparsity_bench cannot find its conf/ directory")


CONF_DIR = conf_dir()
log = logging.getLogger("sparsity_bench")
FAILED_JOBS: list[str] = []  # multirun jobs that failed (see SweepCallback for other launchers)
_RUN_DIR_CHECKED = False  # main() looked into the single run's directory before Hydra started


@lru_cache(maxsize=None)
def _process_uid() -> str:
    """A short random token per process: run directories never collide within a second."""
    return secrets.token_hex(3)


def _register() -> None:
    # use_cache: the value is stored in the config, and Hydra copies that cache into
    # every job's config, also into jobs that run in other processes (joblib, SLURM);
    # without it each worker would draw its own token and put its job in another sweep
    # directory. (Hydra hands registered resolvers to such workers itself.)
    if not OmegaConf.has_resolver("sb_uid"):
        OmegaConf.register_new_resolver("sb_uid", _process_uid, use_cache=True)
    register_configs()


# --------------------------------------------------------------------- pre-flight
def _group_options(group: str) -> list[str]:
    names = {p.stem for p in (CONF_DIR / group).glob("*.yaml")}
    if group.startswith("hydra/"):  # Hydra's own options and those of installed plugins
        from hydra.core.config_store import ConfigStore

        try:
            names |= {n.removesuffix(".yaml") for n in ConfigStore.instance().list(group)}
        except OSError:
            pass
    return sorted(names)


def _explain(err: Exception) -> str:
    """One sentence for whatever Hydra or OmegaConf raised while composing."""
    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    text = str(err)
    if isinstance(err, MissingConfigException):
        m = re.search(r"Could not find '([^']+)/([^'/]+)'", text)
        if m:
            group, option = m.group(1).lstrip("/"), m.group(2)
            options = _group_options(group)
            if options:
                hint = " (joblib and submitit_* come with: pip install 'sparsity_bench[launchers]')" if group == "hydra/launcher" else ""
                return f"Unknown {group} '{option}': choose one of {', '.join(options)}{hint}."
            return f"Unknown config group '{group}' (in '{group}={option}'): valid groups are model, dataset, method, experiment, sweep."
    m = re.search(r"Could not override '([^']+)'\. No match in the defaults list.*use (\+\S+)", text, re.S)
    if m:  # e.g. sweep=lam_grid: a group outside the defaults list is added with +
        return f"'{m.group(1)}' is not in the default config: add it with {m.group(2)}."
    if isinstance(err, OverrideParseException):
        return f"Could not read the command-line override: {text.splitlines()[0]}"
    cause = err.__cause__ or err.__context__
    if isinstance(cause, OmegaConfBaseException):
        source = re.match(r"In '([^']+)':", text)  # the config file whose content failed to merge
        return describe_omegaconf_error(cause, source=source.group(1) if source else None)
    if isinstance(err, OmegaConfBaseException):
        return describe_omegaconf_error(err)
    first = next((line for line in text.splitlines() if line.strip()), text)
    return first if first.endswith(".") else first + "."


def _variants(overrides: list[str]) -> list[list[str]]:
    """The overrides with each sweep replaced by one of its values: every value appears once."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    first = [
        f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}" if o.is_sweep_override() else o.input_line
        for o in parsed
    ]
    variants = [first]
    for i, o in enumerate(parsed):
        if o.is_sweep_override():
            for value in list(o.sweep_string_iterator())[1:]:
                variants.append(first[:i] + [f"{o.get_key_element()}={value}"] + first[i + 1 :])
    return variants


def _is_multirun(argv: list[str], cfg: DictConfig) -> bool:
    return "-m" in argv or "--multirun" in argv or str(cfg.hydra.mode) in ("MULTIRUN", "RunMode.MULTIRUN")


def _job_config(cfg: DictConfig) -> dict:
    """The job's resolved config as the job itself sees it (and as checkpoints store it)."""
    return OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)


@dataclass
class Checked:
    problem: str | None  # one sentence, or None when the command can run
    config: DictConfig | None = None  # the first composed config, hydra node included
    existing: Any = None  # a single run's directory as found (run_dir.Existing), or None


def check_command(argv: list[str]) -> Checked:
    """Compose and validate what argv asks for, and check where it will write (and what is there)."""
    from hydra import compose, initialize_config_dir

    from .run_dir import existing_run, output_problem

    _register()
    overrides = [a for a in argv if not a.startswith("-")]
    try:
        variants = _variants(overrides)
    except Exception as err:  # noqa: BLE001 - any parse failure is the user's input
        return Checked(_explain(err))
    first, devices = None, set()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for variant in variants:
            try:
                cfg = compose(config_name="config", overrides=variant, return_hydra_config=True)
                devices.add(validate(cfg).device.value)
            except ConfigError as err:
                return Checked(str(err))
            except Exception as err:  # noqa: BLE001 - Hydra/OmegaConf composition errors
                return Checked(_explain(err))
            first = first if first is not None else cfg
    if "cuda" in devices:
        import torch  # (only here: a refusal of a typo stays fast)

        if not torch.cuda.is_available():
            return Checked("device=cuda was asked for but no CUDA GPU is visible; use device=cpu or device=auto.")
    multirun = _is_multirun(argv, first)
    try:
        out = str(first.hydra.sweep.dir if multirun else first.hydra.run.dir)
    except Exception as err:  # noqa: BLE001 - an interpolation in the directory that cannot resolve
        return Checked(_explain(err))
    problem = output_problem(out)
    if problem is not None or multirun:  # a sweep's job directories are looked into by each job
        return Checked(problem, first)
    try:
        return Checked(None, first, existing_run(out, _job_config(first)))
    except UserError as err:
        return Checked(str(err))


def preflight(argv: list[str]) -> str | None:
    """Compose and validate what argv asks for; a one-sentence problem, or None when it is fine."""
    return check_command(argv).problem


def _override_value(text: str) -> str:
    """text quoted for a Hydra command-line override: backslashes are escaped only before a quote."""
    body = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, text)
    return "'" + body.replace("'", "\\'") + "'"


# --------------------------------------------------------------------- sweeps
class SweepCallback(Callback):
    """Runs in the process that launched a sweep (conf/config.yaml: hydra.callbacks).

    Jobs that a launcher runs in other processes (joblib, SLURM) cannot append to
    FAILED_JOBS here, so at the end of a sweep the failed results.json files written
    during it are collected from the sweep directory.
    """

    def __init__(self) -> None:
        self.started = 0.0

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self.started = time.time() - 1  # mtime granularity

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        known = {str(Path(p).resolve()) for p in FAILED_JOBS}
        for path in sorted(sweep_dir.glob("*/results.json")):
            try:
                failed = path.stat().st_mtime >= self.started and json.loads(path.read_text()).get("status") == "failed"
            except (OSError, ValueError, AttributeError):
                continue
            if failed and str(path.parent.resolve()) not in known:
                FAILED_JOBS.append(str(path.parent.resolve()))
        if sweep_dir.is_dir():
            print(f"Sweep directory {sweep_dir}; summarize it with: python -m sparsity_bench.report {sweep_dir}", flush=True)


# --------------------------------------------------------------------- the job
@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def run_job(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from . import distributed
    from .pipeline import Pipeline
    from .run_dir import existing_run, finished_line
    from .run_log import summary_table, write_json_atomic

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    config_dict = OmegaConf.to_container(cfg, resolve=True)
    rank = distributed.current()
    try:
        run = validate(cfg)
        existing = None if _RUN_DIR_CHECKED and hc.mode == RunMode.RUN else existing_run(run_dir, config_dict)
        if existing is not None and existing.finished:  # (a single run was told so before Hydra started)
            if rank.is_main:
                print(finished_line(run_dir, existing.results), flush=True)
            return (existing.results or {}).get("final", {}).get("test_acc")
        results = Pipeline(run, run_dir, config_dict).run()
    except KeyboardInterrupt:
        raise SystemExit(
            f"Interrupted. To resume from the last checkpoint, run the same command with hydra.run.dir={run_dir}"
        ) from None
    except (UserError, OSError) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        if rank.is_main and not isinstance(err, RunDirError):  # never overwrite the record of another run
            write_json_atomic(run_dir / "results.json", {"status": "failed", "error": message, "config": config_dict})
        if not rank.is_main:  # every rank diverges together, and rank 0 says so
            message = None if isinstance(err, TrainingDiverged) else f"rank {rank.rank}: {message}"
        if hc.mode == RunMode.MULTIRUN:
            if message:
                log.error("%s", message)
            FAILED_JOBS.append(str(run_dir))
            return None
        raise SystemExit(f"error: {message}" if message else 1) from None
    if rank.is_main:
        print(summary_table(results, run_dir), flush=True)
    return results["final"]["test_acc"]


def main(argv: list[str] | None = None) -> None:
    global _RUN_DIR_CHECKED
    argv = sys.argv[1:] if argv is None else list(argv)
    _RUN_DIR_CHECKED = False
    _register()
    informational = {"--help", "-h", "--hydra-help", "--info", "--cfg", "-c", "--resolve", "--version", "--shell-completion", "-sc"}
    checked = not informational.intersection(argv) and not any(a.startswith(("-cn", "--config-name", "-cp", "--config-path", "-cd", "--config-dir")) for a in argv)
    rank = None
    if checked and os.environ.get("WORLD_SIZE", "1") != "1":  # started by torchrun
        from . import distributed

        rank = distributed.setup()
    ok = False
    try:
        if checked:
            argv = _checked_argv(argv, rank)
        sys.argv = [sys.argv[0], *argv]
        run_job()
        ok = True
    finally:
        if rank is not None:
            from . import distributed

            distributed.teardown(wait=ok)
    if FAILED_JOBS:
        print(f"error: {len(FAILED_JOBS)} job(s) failed; their results.json say why: {', '.join(FAILED_JOBS)}", file=sys.stderr)
        raise SystemExit(1)


def _checked_argv(argv: list[str], rank) -> list[str]:
    """argv after the pre-flight checks (exiting on a problem, or on a finished run), pinned for all ranks."""
    from .run_dir import finished_line

    global _RUN_DIR_CHECKED
    checked = check_command(argv)
    problem, first = checked.problem, checked.config
    if problem is None and rank is not None and _is_multirun(argv, first):
        problem = "A sweep cannot run under torchrun: start one torchrun per job, or run the sweep without torchrun."
    if problem is None and rank is not None:
        problem = rank.device_problem(getattr(first.device, "value", str(first.device)))
    if rank is not None:  # every rank stops when any rank found a problem
        problem = rank.first_problem(problem)
    main_rank = rank is None or rank.is_main
    if problem:
        if main_rank:
            print(f"error: {problem}", file=sys.stderr)
        raise SystemExit(2)
    if not _is_multirun(argv, first):
        existing = checked.existing
        if existing is not None and existing.finished:  # before Hydra rewrites anything in it
            if main_rank:
                print(finished_line(str(first.hydra.run.dir), existing.results), flush=True)
            raise SystemExit(0)
        _RUN_DIR_CHECKED = True
    if rank is None:
        return argv
    # One run directory for all ranks: rank 0's, whose name holds its time and random id.
    run_dir = rank.share_from_main(str(Path(str(first.hydra.run.dir)).absolute()))
    argv = [a for a in argv if not a.startswith("hydra.run.dir=")] + [f"hydra.run.dir={_override_value(run_dir)}"]
    if not rank.is_main:  # rank 0 alone writes .hydra/ and run.log
        argv += ["hydra.output_subdir=null", "hydra/job_logging=disabled"]
    return argv
