"""Configuration: validation against the JSON schema (with defaults) and the study's run matrix.

The Snakefile calls :func:`validate_config` before any job is scheduled, so a bad value fails at once with
a message that names the key, the value and what is allowed. :func:`enumerate_runs` expands the
``experiments`` section into one :class:`RunSpec` per (experiment, head, swept value, seed); each run
carries only its own slice of the config, which is what the train rule passes through ``params:``.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from normscape.pipeline import paths
from normscape.pipeline.errors import ConfigError

#: Training keys an experiment may override or sweep, with the default-section they come from.
TRAINING_KEYS = ("epochs", "batch_size", "lr", "weight_decay", "clip_grad_norm")

#: Short names used for swept keys in run directory names (``lr-0.01``, ``bs-32``).
SWEEP_ABBREV = {"lr": "lr", "batch_size": "bs", "weight_decay": "wd", "clip_grad_norm": "clip"}

BASE_VARIANT = "base"


def default_schema_path() -> Path:
    """The schema shipped with the workflow (repository checkout layout)."""
    return Path(__file__).resolve().parents[3] / "workflow" / "schemas" / "config.schema.yaml"


class UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader that refuses a key given twice in one mapping: plain YAML keeps the last silently, so
    a second ``training:`` block would drop every key of the first without a word."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                first = seen[key]
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r}, first given at line {first.line + 1}, column {first.column + 1}; YAML "
                    "would keep only the last one. Keep one of them",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep)


def load_yaml(path: str | Path) -> Any:
    path = Path(path)
    try:
        with open(path) as fh:
            return yaml.load(fh, Loader=UniqueKeyLoader)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(yaml_error_message(path, exc)) from None


def check_config_syntax(path: str | Path) -> None:
    """Exit with file, line and column when ``path`` exists but is not valid YAML (for the Snakefile)."""
    import sys

    if Path(path).is_file():
        try:
            load_yaml(path)
        except ConfigError as err:
            sys.exit(f"normscape: {err}")


def yaml_error_message(path: str | Path, exc: yaml.YAMLError) -> str:
    """``file:line:column: problem`` of a YAML syntax error (1-based line and column, as editors count)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
    problem = " ".join(p for p in (getattr(exc, "context", None), getattr(exc, "problem", None)) if p) or str(exc)
    if isinstance(exc, yaml.constructor.ConstructorError) and "duplicate key" in problem:
        return f"config file {where}: {problem}."
    return f"config file {where}: invalid YAML ({problem}). Fix the syntax there."


def _fill_defaults(instance: Any, schema: dict, root: dict) -> None:
    """Recursively insert schema ``default`` values for missing object properties (in place)."""
    schema = _resolve(schema, root)
    if not isinstance(instance, dict):
        return
    for key, sub in schema.get("properties", {}).items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if key in instance:
            _fill_defaults(instance[key], sub, root)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key, value in instance.items():
            if key not in schema.get("properties", {}):
                _fill_defaults(value, extra, root)


_JSON_TYPES = {
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "null": type(None),
    "array": list,
    "object": dict,
}


def _resolve(schema: dict, root: dict) -> dict:
    if "$ref" not in schema:
        return schema
    target = root
    for part in schema["$ref"].lstrip("#/").split("/"):
        target = target[part]
    return {**target, **{k: v for k, v in schema.items() if k != "$ref"}}


def _coerce_cli_strings(instance: Any, schema: dict, root: dict) -> Any:
    """Turn strings such as ``'16'``/``'1e-3'``/``'null'`` into numbers/None where the schema wants no string.

    ``snakemake --config backbone='{batch_size: 16}'`` delivers nested values as strings; reading them as YAML
    scalars where the schema expects a number, boolean or null makes such overrides behave as users expect.
    """
    schema = _resolve(schema, root)
    types = schema.get("type")
    types = [types] if isinstance(types, str) else (types or [])
    if isinstance(instance, str) and types and "string" not in types:
        try:
            parsed = yaml.safe_load(instance)
        except yaml.YAMLError:
            return instance
        if isinstance(parsed, str) and "number" in types:  # YAML 1.1 reads '1e-3' as a string
            try:
                parsed = float(parsed)
            except ValueError:
                return instance
        wanted = tuple(t for name in types for t in _as_tuple(_JSON_TYPES.get(name)))
        if wanted and isinstance(parsed, wanted) and not (isinstance(parsed, bool) and bool not in wanted):
            return parsed
        return instance
    if isinstance(instance, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, value in instance.items():
            sub = props.get(key, extra if isinstance(extra, dict) else None)
            if sub is not None:
                instance[key] = _coerce_cli_strings(value, sub, root)
    elif isinstance(instance, list) and isinstance(schema.get("items"), dict):
        return [_coerce_cli_strings(v, schema["items"], root) for v in instance]
    return instance


def _as_tuple(t: Any) -> tuple:
    if t is None:
        return ()
    return t if isinstance(t, tuple) else (t,)


def _format_error(err: jsonschema.ValidationError) -> str:
    key = ".".join(str(p) for p in err.absolute_path) or "<top level>"
    if err.validator == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        unknown = sorted(set(err.instance) - set(allowed))
        return (
            f"config key '{key}': unknown key(s) {unknown}; allowed keys here are {allowed}. "
            "Check the spelling or remove the key."
        )
    if err.validator == "enum":
        return f"config key '{key}': value {err.instance!r} is not allowed; choose one of {err.validator_value}."
    if err.validator == "type":
        return f"config key '{key}': value {err.instance!r} has the wrong type; expected {err.validator_value}."
    if err.validator in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        op = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}[err.validator]
        return f"config key '{key}': value {err.instance!r} is out of range; it must be {op} {err.validator_value}."
    if err.validator == "minItems":
        return f"config key '{key}': the list is empty (or too short); give at least {err.validator_value} item(s)."
    if err.validator == "required" and not err.absolute_path and "experiments" in err.message:
        return (
            "the config defines no experiments: Snakemake found no config.yaml in the directory it runs in (with "
            "--directory DIR it reads DIR/config.yaml). Run from the repository, or pass --configfile with your "
            "experiments."
        )
    if err.validator == "required":
        return f"config key '{key}': {err.message}."
    return f"config key '{key}': value {err.instance!r} is invalid: {err.message}."


# Keys an earlier version of the config had, and where they live now: a config written for it gets one message
# naming the new place instead of "unknown key".
MOVED_KEYS = {
    ("landscape", "hessian"): "'hessian' (one section for every Hessian number; its keys are unchanged)",
    ("diagnostics", "spectrum"): (
        "'hessian.spectrum' (its 'samples' is 'hessian.samples': one training subset for every Hessian number)"
    ),
}


def _moved_keys(cfg: dict) -> list[str]:
    return [
        f"config key '{section}.{key}' has moved to {where}. Move it there."
        for (section, key), where in MOVED_KEYS.items()
        if isinstance(cfg.get(section), dict) and key in cfg[section]
    ]


def hessian_settings(cfg: dict) -> dict:
    """What lambda_max, lambda_min and the trace are computed with (rules sharpness and matched)."""
    return {k: v for k, v in cfg["hessian"].items() if k != "spectrum"}


def spectrum_settings(cfg: dict) -> dict:
    """What the spectrum is computed with (rule curvature): ``hessian.spectrum`` on ``hessian.samples``."""
    return {**cfg["hessian"]["spectrum"], "samples": cfg["hessian"]["samples"]}


def _cross_checks(cfg: dict) -> list[str]:
    problems = []
    gh = cfg["grad_hist"]
    if gh["min"] >= gh["max"]:
        problems.append(f"config key 'grad_hist': min ({gh['min']}) must be smaller than max ({gh['max']}).")
    data = cfg["data"]
    if data["dataset"] == "imagefolder" and not data["root"]:
        problems.append("config key 'data.root': data.dataset is imagefolder, so set data.root to its folder.")
    if data["val_fraction"] + data["test_fraction"] >= 1:
        problems.append("config keys 'data.val_fraction' + 'data.test_fraction' must leave training images (< 1).")
    for name in cfg["landscape"]["experiments"]:
        if name not in cfg["experiments"]:
            problems.append(
                f"config key 'landscape.experiments': experiment {name!r} is not defined under "
                f"'experiments' (defined: {sorted(cfg['experiments'])})."
            )
    return problems


def with_registered_names(schema: dict) -> dict:
    """The schema with the registries' names as the allowed values: head names (norms.py) and datasets
    (datasets.py). Backbone archs are torchvision's own registry, checked by the feature and download jobs
    (importing torchvision here would cost seconds on every `snakemake` call)."""
    from normscape.data.datasets import DATASETS
    from normscape.models.norms import NORMS

    defs = schema.setdefault("definitions", {})
    defs.setdefault("norm_name", {"type": "string"})["enum"] = list(NORMS)
    props = schema["properties"]
    props["data"]["properties"]["dataset"]["enum"] = list(DATASETS)
    return schema


def validate_config(config: dict, schema_path: str | Path | None = None) -> dict:
    """Validate ``config`` (in place: defaults are filled in) and return it.

    Raises :class:`ConfigError` listing every problem, each naming key, value and what is allowed.
    """
    if not isinstance(config, dict):
        raise ConfigError(f"the config must be a mapping of keys to values, got {type(config).__name__}.")
    moved = _moved_keys(config)
    if moved:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(moved))
    if isinstance(config.get("experiments"), dict):
        # an experiment set to null is left out: how a --configfile extending config.yaml removes one (Snakemake
        # merges the files key by key, so leaving it out of the file keeps config.yaml's); --config passes the word
        for name in [name for name, value in config["experiments"].items() if value in (None, "null", "None")]:
            del config["experiments"][name]
    schema = with_registered_names(load_yaml(schema_path or default_schema_path()))
    _coerce_cli_strings(config, schema, schema)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(_format_error(e) for e in errors))
    _fill_defaults(config, schema, schema)
    problems = _cross_checks(config)
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))
    return config


def load_config(path: str | Path, schema_path: str | Path | None = None) -> dict:
    """Read a YAML config file and validate it (for use outside Snakemake)."""
    return validate_config(load_yaml(path) or {}, schema_path)


def format_value(value: float | int) -> str:
    """Compact, path-safe text for a swept value: 0.001 -> '0.001', 1e-05 -> '1e-05', 32 -> '32'."""
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One training run of the study: where it lives and exactly the settings it depends on."""

    experiment: str
    head: str
    variant: str
    seed: int
    training: dict  # epochs, batch_size, lr, weight_decay, clip_grad_norm

    @property
    def run_id(self) -> str:
        return paths.run_id(self.experiment, self.head, self.variant, self.seed)

    def run_dir(self, results_dir: str | Path) -> Path:
        return Path(paths.run_dir(results_dir, self.run_id))


def experiment_conditions(cfg: dict, experiment: str) -> dict:
    """The training settings every run of ``experiment`` shares (its swept key left out), for figure titles."""
    exp = cfg["experiments"][experiment]
    swept = set(exp.get("sweep") or {})
    return {k: exp.get(k, cfg["training"][k]) for k in TRAINING_KEYS if k not in swept}


def experiment_runs(cfg: dict, experiment: str) -> list[RunSpec]:
    """Every run of one experiment, in a stable order (head, swept value, seed)."""
    exp = cfg["experiments"][experiment]
    base = {k: exp.get(k, cfg["training"][k]) for k in TRAINING_KEYS}
    seeds = exp.get("seeds", cfg["seeds"])
    sweep = exp.get("sweep")
    if sweep:
        ((key, values),) = sweep.items()
        variants = [(f"{SWEEP_ABBREV[key]}-{format_value(v)}", {**base, key: v}) for v in values]
    else:
        variants = [(BASE_VARIANT, base)]
    return [
        RunSpec(experiment, head, variant, int(seed), dict(training))
        for head in exp["heads"]
        for variant, training in variants
        for seed in seeds
    ]


def enumerate_runs(cfg: dict, experiments: Iterable[str] | None = None) -> list[RunSpec]:
    """All runs of the study (or of the named experiments)."""
    names = list(cfg["experiments"]) if experiments is None else list(experiments)
    return [run for name in names for run in experiment_runs(cfg, name)]


def find_run(cfg: dict, experiment: str, head: str, variant: str, seed: int | str) -> RunSpec:
    """The run matching Snakemake wildcards; a clear error when the config does not define it."""
    if experiment not in cfg["experiments"]:
        raise ConfigError(
            f"experiment {experiment!r} is not defined in the config (defined: {sorted(cfg['experiments'])})."
        )
    runs = experiment_runs(cfg, experiment)
    for run in runs:
        if (run.head, run.variant, run.seed) == (head, variant, int(seed)):
            return run
    has = {field: list(dict.fromkeys(getattr(run, field) for run in runs)) for field in ("head", "variant", "seed")}
    raise ConfigError(
        f"run {experiment}/{head}/{variant}/seed{seed} is not part of the config's experiment {experiment!r} "
        f"(its heads {has['head']}, variants {has['variant']}, seeds {has['seed']}); check its heads, sweep values "
        "and seeds."
    )


def check_config_files(paths: list[str], alone: bool = False) -> dict:
    """The config Snakemake would run with here: the working directory's config.yaml (the workflow's configfile)
    extended by each file in order, as ``--configfile`` does; ``alone``: the files are the whole config
    (``--replace-workflow-config``). Each file's syntax is checked first (line and column)."""
    from snakemake.utils import update_config

    from normscape.pipeline.plugins import load_plugins

    cfg = (load_yaml("config.yaml") or {}) if Path("config.yaml").is_file() and not alone else {}
    for path in paths:
        loaded = load_yaml(path) or {}
        if not isinstance(loaded, dict) or not isinstance(cfg, dict):
            raise ConfigError(f"config file {path}: the top level must be a mapping of keys to values.")
        update_config(cfg, loaded)
    load_plugins(cfg.get("plugins"))  # their norms are allowed values
    return validate_config(cfg)


# python -m normscape.pipeline.config FILE [FILE ...] [--alone]: check config files as the workflow reads them
if __name__ == "__main__":
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m normscape.pipeline.config", description=check_config_files.__doc__)
    parser.add_argument("files", nargs="+", help="config files, given to snakemake with --configfile")
    parser.add_argument("--alone", action="store_true", help="the files are the whole config, not extensions")
    args = parser.parse_args()
    try:
        check_config_files(args.files, args.alone)
    except ConfigError as err:
        sys.exit(f"normscape: {err}")
    print(f"{', '.join(args.files)}: valid" + ("" if args.alone else " (extending config.yaml)"))
