"""Per-run entry points of the curvature diagnostics, from files to files (what a Snakemake script calls).

:func:`compute_curvature_diagnostics` loads a trained head and the fixed training subset and writes
``spectrum.h5`` + ``spectrum.json`` (:mod:`normscape.curvature.spectrum`) and ``adaptive_sharpness.json``
(:mod:`normscape.curvature.adaptive_sharpness`), in eval mode and — for BatchNorm heads — also in train mode with the
run's training batch size; :func:`compute_curvature` (the curvature rule) adds the provenance and records a diverged
run. :func:`training_probes` builds a run's probes for the Trainer from their config slices (smoothness,
preconditioned sharpness) and :func:`write_probe_records` writes each one's files after training.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch

from normscape.curvature.adaptive_sharpness import adaptive_sharpness, write_adaptive_sharpness
from normscape.curvature.smoothness import SmoothnessProbe
from normscape.curvature.spectrum import hessian_spectrum, write_spectrum
from normscape.landscape.run_inputs import load_head, rows_as_tensors, subset_rows
from normscape.training.run_records import ProbeSet

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def smoothness_probe(settings: dict) -> SmoothnessProbe | None:
    """The probe for ``diagnostics.smoothness`` (None when disabled)."""
    if not settings.get("enabled", True):
        return None
    return SmoothnessProbe(
        every=settings["every"],
        multipliers=tuple(settings["multipliers"]),
        direction=settings["direction"],
        dtype=DTYPES[settings.get("dtype", "float32")],
    )


def preconditioned_sharpness_probe(settings: dict, train: tuple, training: dict):
    """The probe for ``diagnostics.preconditioned_sharpness`` on a run with ``training`` settings: a fixed seeded
    subset of the training set (the same for every run: their numbers are comparable), ``per_run`` probes spread
    evenly over the run's steps, plus one at step 0. BatchNorm takes batch statistics over chunks of the run's
    batch size, or over the whole subset when the batch is larger than it."""
    from normscape.curvature.edge_of_stability import PreconditionedSharpnessProbe

    if not settings.get("enabled", True):
        return None
    x, y = train
    batch_size = int(training["batch_size"])
    rows = torch.randperm(len(x), generator=torch.Generator().manual_seed(settings["subset_seed"]))
    rows = rows[: settings["samples"]].sort().values
    # as normscape.training.trainer counts
    steps_per_epoch = len(x) // batch_size + (1 if len(x) % batch_size > 1 else 0)
    return PreconditionedSharpnessProbe(
        x[rows],
        y[rows],
        batch_size=min(batch_size, len(rows)),
        every=max(1, steps_per_epoch * int(training["epochs"]) // settings["per_run"]),
        lanczos_steps=settings["lanczos_steps"],
        tol=settings["tol"],
        dtype=DTYPES[settings.get("dtype", "float32")],
    )


def _write_smoothness(paths: tuple, probe, attrs: dict) -> None:
    from normscape.curvature.smoothness import write_smoothness

    write_smoothness(*paths, probe if probe is not None else SmoothnessProbe(), attrs)


def _write_preconditioned_sharpness(paths: tuple, probe, attrs: dict) -> None:
    from normscape.curvature.edge_of_stability import write_preconditioned_sharpness

    write_preconditioned_sharpness(*paths, probe, attrs)


# The probes a train job carries, by measure name (the measures of rule "train" in normscape.pipeline.measures):
# how one is built for a run (its config slice, the training split, the run's training settings) and how its
# (h5, json) records are written (zero records, ``probed`` false, for a run without it).
TRAINING_PROBES = {
    "smoothness": (lambda settings, train, training: smoothness_probe(settings), _write_smoothness),
    "preconditioned_sharpness": (preconditioned_sharpness_probe, _write_preconditioned_sharpness),
}


def _training_probe(name: str) -> tuple:
    if name not in TRAINING_PROBES:
        raise ValueError(f"unknown training probe {name!r}; known: {sorted(TRAINING_PROBES)}")
    return TRAINING_PROBES[name]


def training_probes(settings: dict[str, dict], train: tuple, training: dict) -> ProbeSet | None:
    """The probes of one run, by measure name, from their config slices (None when none is enabled)."""
    probes = {name: _training_probe(name)[0](s, train, training) for name, s in settings.items()}
    probes = {name: probe for name, probe in probes.items() if probe is not None}
    return ProbeSet(probes) if probes else None


def write_probe_records(name: str, paths: tuple, probe, attrs: dict) -> None:
    """One probe's (h5, json) records of a run (zero records, ``probed`` false, for a run without it)."""
    _training_probe(name)[1](paths, probe, attrs)


def modes_for(head: str, train_mode: bool) -> tuple[str, ...]:
    """eval always; train (batch statistics) too for BatchNorm — the only head where the two differ."""
    return ("eval", "train") if train_mode and head == "batch" else ("eval",)


def compute_curvature_diagnostics(
    model_path,
    features_path,
    batch_size: int,
    spectrum: dict,
    sharpness: dict,
    out_spectrum_h5,
    out_spectrum_json,
    out_adaptive_json,
    seed: int = 0,
    enabled: dict | None = None,
) -> dict:
    """Spectrum and adaptive sharpness of one trained head -> files; returns {"spectrum": .., "adaptive": ..}.

    ``spectrum`` / ``sharpness`` are the ``hessian.spectrum`` (with ``hessian.samples``) /
    ``diagnostics.adaptive_sharpness`` config slices (``enabled``: {"spectrum": bool, "adaptive": bool}; a
    disabled one writes no modes); both use the same seeded subset of ``samples`` training rows (``seed``: the
    landscape's ``direction_seed``, so it is the subset of the other Hessian numbers).
    """
    model = load_head(model_path)
    samples = max(spectrum["samples"], sharpness["samples"])
    x, y = rows_as_tensors(features_path, "train", subset_rows(features_path, "train", samples, seed))
    spectra, sharp = {}, {}
    enabled = {"spectrum": True, "adaptive": True, **(enabled or {})}
    spectrum_modes = modes_for(model.norm_name, spectrum.get("batchnorm_train_mode", True))
    for mode in spectrum_modes if enabled["spectrum"] else ():
        t0 = time.perf_counter()
        spectra[mode] = hessian_spectrum(
            model,
            x[: spectrum["samples"]],
            y[: spectrum["samples"]],
            mode=mode,
            batch_size=batch_size,
            top_k=spectrum["top_k"],
            slq_steps=spectrum["slq_steps"],
            slq_runs=spectrum["slq_runs"],
            block_steps=spectrum["block_steps"],
            block_probes=spectrum["block_probes"],
            dtype=DTYPES[spectrum["dtype"]],
            seed=seed,
        )
        spectra[mode]["summary"]["seconds"] = time.perf_counter() - t0
        log.info("spectrum (%s mode): top eigenvalues %s", mode, spectra[mode]["summary"]["top_eigenvalues"])
    sharpness_modes = modes_for(model.norm_name, sharpness.get("batchnorm_train_mode", True))
    for mode in sharpness_modes if enabled["adaptive"] else ():
        t0 = time.perf_counter()
        sharp[mode] = adaptive_sharpness(
            model,
            x[: sharpness["samples"]],
            y[: sharpness["samples"]],
            sharpness["radii"],
            average_radii=sharpness.get("average_radii"),
            ball=sharpness["ball"],
            samples=sharpness["noise_samples"],
            ascent_steps=sharpness["ascent_steps"],
            mode=mode,
            batch_size=batch_size,
            seed=seed,
            dtype=DTYPES[sharpness["dtype"]],
        )
        sharp[mode]["seconds"] = time.perf_counter() - t0
    write_spectrum(out_spectrum_h5, out_spectrum_json, spectra)
    write_adaptive_sharpness(out_adaptive_json, sharp)
    return {"spectrum": {m: r["summary"] for m, r in spectra.items()}, "adaptive": sharp}


def compute_curvature(
    model_final,
    features_path,
    batch_size: int,
    spectrum: dict,
    sharpness: dict,
    out_spectrum_h5,
    out_spectrum_json,
    out_adaptive_json,
    seed: int = 0,
) -> dict:
    """The curvature rule: :func:`compute_curvature_diagnostics` with provenance, and diverged runs recorded.

    Every file records ``provenance``: the run identity of ``model_final.pt`` (the training it describes), the
    feature cache's identity and digests of the two settings. A diverged run (its model has non-finite
    parameters) gets null numbers and the reason, like sharpness.json, never a traceback.
    """
    import h5py

    from normscape.features.store import digest, identity
    from normscape.landscape.run_inputs import divergence_of, load_head_file
    from normscape.pipeline.atomic import atomic_path, write_json
    from normscape.pipeline.errors import DataError

    model, state = load_head_file(model_final)
    run = state.get("provenance") or {}
    features_identity = identity(features_path)
    if run.get("features_identity") not in (None, features_identity):
        raise DataError(
            f"{model_final} was trained on other features than {features_path}; rerun it: snakemake --cores 2 all"
        )
    provenance = {
        "run_identity": run.get("identity"),
        "features_identity": features_identity,
        "spectrum": digest(spectrum),
        "adaptive_sharpness": digest(sharpness),
    }
    reason = divergence_of(model, state)
    if reason is not None:
        record = {"diverged": True, "reason": reason, "provenance": provenance}
        with atomic_path(out_spectrum_h5, suffix=".h5") as tmp, h5py.File(tmp, "w") as f:
            f.attrs.update({"status": "diverged", "reason": reason, "run_identity": str(run.get("identity"))})
        write_json(out_spectrum_json, record)
        write_json(out_adaptive_json, record)
        log.info("run diverged (%s): no curvature numbers", reason)
        return {"diverged": True, "reason": reason}
    enabled = {"spectrum": spectrum.get("enabled", True), "adaptive": sharpness.get("enabled", True)}
    result = compute_curvature_diagnostics(
        model_final,
        features_path,
        batch_size,
        {**spectrum, "batchnorm_train_mode": spectrum.get("batchnorm_train_mode", True)},
        sharpness,
        out_spectrum_h5,
        out_spectrum_json,
        out_adaptive_json,
        seed=seed,
        enabled=enabled,
    )
    for path, name in ((out_spectrum_json, "spectrum"), (out_adaptive_json, "adaptive")):
        record = json.loads(Path(path).read_text())
        write_json(path, {**record, "enabled": enabled[name], "provenance": provenance})
    with h5py.File(out_spectrum_h5, "a") as f:
        f.attrs.update({"status": "ok", "run_identity": str(run.get("identity"))})
    return result
