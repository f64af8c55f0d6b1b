"""The run-path layout, stated once: where a run's files live, as a format string, Snakemake wildcards and a regex.

``RUN_LAYOUT`` is ``{experiment}/{head}/{variant}/seed{seed}``. Training writes to ``<results>/runs/<layout>/``,
landscapes and sharpness to ``<results>/landscapes/<layout>/``; the rules use the same string as their wildcard
pattern (common.smk) and :func:`run_key` parses any file path back into the run's identity with the regex
derived from it, so figures and tables need nothing but the files Snakemake hands them.
"""

from __future__ import annotations

import re
from pathlib import Path

RUN_LAYOUT = "{experiment}/{head}/{variant}/seed{seed}"
# digits for the seed, one path component for every other field
_FIELD_PATTERNS = {"seed": r"\d+"}
RUN_PATH = re.compile(
    re.sub(
        r"\\\{(\w+)\\\}",
        lambda m: f"(?P<{m.group(1)}>{_FIELD_PATTERNS.get(m.group(1), '[^/]+')})",
        re.escape(RUN_LAYOUT),
    )
    + r"/[^/]+$"
)


def run_id(experiment: str, head: str, variant: str, seed: int | str) -> str:
    return RUN_LAYOUT.format(experiment=experiment, head=head, variant=variant, seed=seed)


def run_dir(results_dir: str | Path, run_id_: str) -> str:
    """Training outputs of one run."""
    return f"{results_dir}/runs/{run_id_}"


def landscape_dir(results_dir: str | Path, run_id_: str) -> str:
    """Landscape and sharpness outputs of one run."""
    return f"{results_dir}/landscapes/{run_id_}"


def run_key(path: str | Path) -> dict:
    """``{"experiment", "head", "variant", "seed"}`` of a file inside a run directory."""
    m = RUN_PATH.search(Path(path).as_posix())
    if not m:
        raise ValueError(f"{path} is not inside a run directory {RUN_LAYOUT}/")
    key = m.groupdict()
    key["seed"] = int(key["seed"])
    return key
