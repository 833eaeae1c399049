"""The Hydra entry: compose, validate, hand to the pipeline.

Before Hydra starts any job, every configuration the command line asks for (each
value of a sweep) is composed and validated once, so that a typo is refused in one
sentence before anything runs, instead of as a stack trace from inside a job.
"""
from __future__ import annotations

import json
import logging
import os
import re
import secrets
import sys
import time
from functools import lru_cache
from pathlib import Path

import hydra
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from .config import ConfigError, describe_omegaconf_error, register_configs, validate


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
        return describe_omegaconf_error(cause)
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


def preflight(argv: list[str]) -> str | None:
    """Compose and validate what argv asks for; a one-sentence problem, or None when it is fine."""
    from hydra import compose, initialize_config_dir

    _register()
    overrides = [a for a in argv if not a.startswith("-")]
    try:
        variants = _variants(overrides)
    except Exception as err:  # noqa: BLE001 - any parse failure is the user's input
        return _explain(err)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for variant in variants:
            try:
                cfg = compose(config_name="config", overrides=variant, return_hydra_config=True)
                validate(cfg)
            except ConfigError as err:
                return str(err)
            except Exception as err:  # noqa: BLE001 - Hydra/OmegaConf composition errors
                return _explain(err)
    return None


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

    from .errors import UserError
    from .pipeline import Pipeline
    from .run_log import summary_table, write_json_atomic

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    config_dict = OmegaConf.to_container(cfg, resolve=True)
    try:
        run = validate(cfg)
        results = Pipeline(run, run_dir, config_dict).run()
    except KeyboardInterrupt:
        raise SystemExit(
            f"Interrupted. To resume from the last checkpoint, run the same command with hydra.run.dir={run_dir}"
        ) from None
    except (UserError, OSError) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        write_json_atomic(run_dir / "results.json", {"status": "failed", "error": message, "config": config_dict})
        if hc.mode == RunMode.MULTIRUN:
            log.error("%s", message)
            FAILED_JOBS.append(str(run_dir))
            return None
        raise SystemExit(f"error: {message}") from None
    print(summary_table(results, run_dir), flush=True)
    return results["final"]["test_acc"]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    _register()
    informational = {"--help", "-h", "--hydra-help", "--info", "--cfg", "-c", "--resolve", "--version", "--shell-completion", "-sc"}
    if not informational.intersection(argv) and not any(a.startswith(("-cn", "--config-name", "-cp", "--config-path", "-cd", "--config-dir")) for a in argv):
        problem = preflight(argv)
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            raise SystemExit(2)
    sys.argv = [sys.argv[0], *argv]
    run_job()
    if FAILED_JOBS:
        print(f"error: {len(FAILED_JOBS)} job(s) failed; their results.json say why: {', '.join(FAILED_JOBS)}", file=sys.stderr)
        raise SystemExit(1)
