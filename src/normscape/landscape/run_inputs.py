"""What every per-run measure reads: the trained head (with its file's records) and a fixed, seeded subset of
one split of the feature cache, read row by row.

Used by the landscape and sharpness jobs (:mod:`normscape.landscape.jobs`) and the curvature ones
(:mod:`normscape.curvature.jobs`, :mod:`normscape.curvature.matched_loss`), so every measure of a run sees the
same head and the same samples.
"""

from __future__ import annotations

import numpy as np
import torch

from normscape.models.heads import ClassifierHead, build_head


def subset_indices(n: int, samples: int, seed: int) -> np.ndarray:
    """A fixed, seeded subset of ``samples`` rows (all rows when there are fewer), sorted."""
    if samples >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=samples, replace=False))


def subset_rows(features: str, split: str, samples: int, seed: int) -> np.ndarray:
    """:func:`subset_indices` of one split of a feature store (its length read from the file)."""
    from normscape.features import store

    return subset_indices(store.split_length(features, split), samples, seed)


def rows_as_tensors(features: str, split: str, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and labels (int64) of ``rows`` of one split; only those rows are read."""
    from normscape.features import store

    x, y = store.load_rows(features, split, rows)
    return torch.from_numpy(x), torch.from_numpy(y).long()


def load_head(path) -> ClassifierHead:
    return load_head_file(path)[0]


def load_head_file(path) -> tuple[ClassifierHead, dict]:
    from normscape.pipeline.errors import DataError

    state = torch.load(path, map_location="cpu", weights_only=False)
    model = build_head(**state["head_config"])
    try:
        model.load_state_dict(state["state_dict"])
    except RuntimeError as exc:  # the norm's (or head's) code changed since the run was trained
        problem = str(exc).strip().splitlines()[-1].strip()
        raise DataError(
            f"{path} does not fit the head that norm {state['head_config']['norm']!r} builds now ({problem}): its "
            "code changed after this run was trained. Retrain the run: snakemake --cores 2 all (a run's identity "
            "covers its norm's code, so Snakemake retrains it; for results of an older normscape add "
            "--forcerun train)."
        ) from None
    return model.eval(), state


def divergence_of(model: ClassifierHead, model_state: dict) -> str | None:
    """Why no landscape can be computed at this point (None: the run converged or at least stayed finite)."""
    if model_state.get("diverged"):
        return f"the run diverged: {model_state.get('diverged_reason') or 'see its summary.json'}"
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        return "the trained parameters are not finite"
    return None
