# Shared helpers: config validation, the run matrix, output paths and input functions.
# Every stage file registers its final outputs in STAGE_TARGETS; `rule all` asks for all of them.
import os
import re
import sys
import time
from pathlib import Path

# When this Snakemake process read the workflow: the closing overview (Snakefile onsuccess) shows the tables only
# when the run wrote them after this.
WORKFLOW_STARTED = time.time()

SRC_DIR = Path(workflow.basedir) / "src"
# Scripts import the `normscape` package from src/ even when it is not pip-installed (conda envs, clusters).
sys.path.insert(0, str(SRC_DIR))
os.environ.update(PYTHONPATH=os.pathsep.join(p for p in (str(SRC_DIR), os.environ.get("PYTHONPATH")) if p))

from normscape.pipeline.config import (  # noqa: E402
    enumerate_runs,
    experiment_conditions,
    experiment_runs,
    find_run,
    hessian_settings,
    spectrum_settings,
    validate_config,
)
from normscape.data import datasets  # noqa: E402
from normscape.pipeline import paths  # noqa: E402
from normscape.figures.registry import FIGURES as FIGURE_SPECS, INPUT_KINDS as FIGURE_INPUT_KINDS  # noqa: E402
from normscape.pipeline.errors import ConfigError, NormscapeError  # noqa: E402
from normscape.pipeline.plugins import load_plugins  # noqa: E402
from normscape.models.norms import code_digest  # noqa: E402
from normscape.pipeline.measures import (  # noqa: E402
    MEASURES,
    curvature_enabled,
    location_of,
    measured_experiments,
    settings_of,
    training_probes,
)
from normscape.pipeline.runtime import job_environment  # noqa: E402
from normscape.features.store import cache_differences  # noqa: E402
from normscape.pipeline.atomic import atomic_path  # noqa: E402

# Every job inherits these (OpenMP's and glibc's settings must be in place when a job's process starts); a value
# already set wins (normscape.pipeline.runtime.job_environment).
os.environ.update(job_environment())

try:
    # plugins first: the norms, backbones and datasets they register are allowed values of the config
    load_plugins(config.get("plugins"))
    validate_config(config, Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml")
except ConfigError as exc:
    sys.exit(f"normscape: {exc}")

RESULTS = config["results_dir"]
DOWNLOADS = config["downloads_dir"]
ENV = "../../envs/normscape.yaml"

# Final outputs of each stage, filled in by the stage's .smk file.
STAGE_TARGETS = {}


def grad_hist_settings(cfg):
    """The grad_hist slice a run is trained with: ``every: 1`` is what its absence means (every step), so it is left
    out and a run's identity names ``every`` only when it changes what is counted."""
    return {k: v for k, v in cfg["grad_hist"].items() if not (k == "every" and v == 1)}


def features_request():
    """What a feature cache must have been built for, as the config states it: the backbone settings that define
    the features (not how extraction runs: batch size, device) and the dataset's split. A job that reads the cache
    checks it against this slice before use; anything outside it would only rerun jobs whose numbers it cannot
    change (Snakemake reruns a job whose params changed)."""
    from normscape.features.store import BACKBONE_REQUEST_KEYS

    backbone = {key: config["backbone"].get(key) for key in BACKBONE_REQUEST_KEYS}
    return canonical({"backbone": backbone, "data": {k: DATA[k] for k in datasets.SPLIT_KEYS if k in DATA}})


def canonical(obj):
    """A config slice with keys sorted recursively: Snakemake compares params by their text, so the key order
    (which depends on how the config was merged) must not make an unchanged slice look changed."""
    if isinstance(obj, dict):
        return {key: canonical(obj[key]) for key in sorted(obj)}
    if isinstance(obj, list):
        return [canonical(value) for value in obj]
    return obj


def check_cached_files(files):
    """Exit with one message when a cached HDF5 file exists but is corrupt ({description: path})."""
    from normscape.features.store import check_readable
    from normscape.pipeline.integrity import check_hdf5

    for what, path in files.items():
        problem = check_readable(path) if what == "feature file" else check_hdf5(path, what)
        if problem:
            sys.exit(f"normscape: {problem}")


def cache_verdict_input(verdict_file):
    """The input of the job that writes the feature cache which rebuilds a cache Snakemake has no record of (one
    copied in) when it differs from what the config asks (:func:`~normscape.features.store.cache_differences`;
    it imports torchvision only for a cache that records another backbone request than the config's).
    ``verdict_file`` says whether it does and always exists (a changed set of inputs would rerun that job too);
    it is written only when the verdict changes, so building the cache leaves it as it was. If the cache differs,
    the file is kept newer than the cache, so the job runs until it has written a matching cache; if it matches,
    the input is ``ancient`` (its mtime ignored). Written atomically (on a cluster every job parses the
    workflow); where results/ cannot be written, nothing is decided here."""
    path, cache = Path(verdict_file), Path(FEATURES)
    differences = cache_differences(cache, config["backbone"], DATA)
    verdict = (
        f"the feature cache was built for other settings: {'; '.join(differences)}\n"
        if differences
        else "the feature cache matches the config (or is not built yet)\n"
    )
    try:
        behind = differences and path.is_file() and path.stat().st_mtime <= cache.stat().st_mtime
        if behind or not path.is_file() or path.read_text() != verdict:
            with atomic_path(path) as tmp:
                Path(tmp).write_text(verdict)
    except (OSError, NormscapeError):  # read-only results, a full disk: the jobs' own checks still hold
        return {}
    return {"cache_verdict": verdict_file if differences else ancient(verdict_file)}


def archive_and_checksum():
    """The archive prepare_data reads (local or downloaded; None for an image tree) and the checksum it must have
    (``official`` resolved; None where the dataset has no archive to verify)."""
    return DATA["archive"] or DATA_DOWNLOAD, datasets.resolved_checksum(DATA) if DATASET.url is not None else None


def check_checksum_of_cached_features():
    """Exit when data.checksum (a sha256) differs from the one the feature cache records and the archive does not
    have it either. data.checksum is no job's param (it changes no byte), so with everything up to date no job
    would verify the archive against it. Reads one attribute; hashes the archive only when the two differ."""
    from normscape.data.cifar import verify_checksum
    from normscape.features.store import read_attrs

    archive, checksum = archive_and_checksum()
    if not checksum or not checksum.lower().startswith("sha256:") or not Path(FEATURES).is_file():
        return
    try:
        recorded = str(read_attrs(FEATURES).get("data_checksum") or "")
    except (OSError, NormscapeError):  # an unreadable cache is check_cached_files' to report
        return
    if recorded.lower() != checksum.lower() and archive and Path(archive).is_file():
        try:
            verify_checksum(archive, checksum)
        except NormscapeError as exc:
            sys.exit(f"normscape: {exc}")


def check_inputs_before_jobs():
    """Exit with one message when extraction or data preparation would fail on the configured backbone or
    archive. These checks read contents (torchvision, the archive's bytes), too slow for every parse, so they
    run once, when Snakemake is about to start jobs (onstart) and has deleted nothing yet: found by the job
    itself, a mistake would cost the outputs Snakemake removes when the job starts (the feature cache), and
    undoing it would still rerun everything downstream (Snakemake records a failed job's params:
    docs/upstream/snakemake-failed-job-metadata.md)."""
    from normscape.data.cifar import verify_checksum
    from normscape.features.store import built_from

    # a damaged feature cache (its CRC, ~0.3 s) is found now, not by the train jobs after Snakemake removed their
    # outputs; a cache that will be rebuilt is checked too (it is read whole by nothing else in this process)
    if Path(FEATURES).is_file():
        from normscape.features.store import SPLITS, map_split

        try:
            for split in SPLITS:
                map_split(FEATURES, split)
        except NormscapeError as exc:
            sys.exit(f"normscape: {exc}")
    weights = backbone_weights_file() or None
    if not built_from(FEATURES, config["backbone"], weights):
        from normscape.features.backbones import backbone_problem

        if problem := backbone_problem(config["backbone"], weights):
            sys.exit(f"normscape: {problem}")
    archive, checksum = archive_and_checksum()
    if checksum and archive and Path(archive).is_file():
        try:
            verify_checksum(archive, checksum)
        except NormscapeError as exc:
            sys.exit(f"normscape: {exc}")


# What results_dir holds (a target under one of them names a result)
RESULT_STAGE_DIRS = ("runs", "landscapes", "figures", "tables", "features", "report", "report.html", "report.zip")


def check_requested_runs(arguments):
    """Exit with one message when a target is a file of a run the config does not define (under runs/ or
    landscapes/), instead of Snakemake's input-function traceback or its bare "No rule to produce"."""
    results = os.path.abspath(RESULTS)
    for argument in arguments:
        path = os.path.abspath(argument)
        first, _, rest = argument.partition("/")
        # a README path (results/<stage>/...) while results_dir is elsewhere (not inside it: results/ablation)
        readme_path = first == "results" and rest.split("/")[0] in RESULT_STAGE_DIRS
        if readme_path and not path.startswith(results + os.sep) and os.path.abspath(first) != results:
            sys.exit(
                f"normscape: {argument}: this config writes its results under results_dir = {RESULTS}; "
                f"ask for {os.path.join(RESULTS, rest)}"
            )
        stage, _, inside = os.path.relpath(path, results).partition(os.sep)
        if path.startswith(results + os.sep) and stage in ("runs", "landscapes"):
            try:
                key = paths.run_key(inside)
                find_run(config, key["experiment"], key["head"], key["variant"], key["seed"])
            except ValueError:  # not a run's file (a directory, another layout): Snakemake's own message
                continue
            except ConfigError as exc:
                sys.exit(f"normscape: {argument}: {exc}")


def all_targets():
    return [path for stage in STAGE_TARGETS.values() for path in stage]


# The run-path layout (normscape/pipeline/paths.py) as wildcard patterns and as one run's directory.
RUN_DIR = paths.run_dir(RESULTS, paths.RUN_LAYOUT)
LANDSCAPE_DIR = paths.landscape_dir(RESULTS, paths.RUN_LAYOUT)
# Scheduling priority of the runs a landscape reads and of every job on their landscape directory: they train
# first and their landscape, sharpness and curvature jobs then run beside the remaining trainings, instead of
# waiting in a chain (train -> landscape -> sharpness) after the last training. The study ends with its figures,
# not with that chain; results do not depend on the order.
LANDSCAPE_PRIORITY = 1


def run_dir(run):
    """Directory of one training run (a normscape.pipeline.config.RunSpec)."""
    return paths.run_dir(RESULTS, run.run_id)


def landscape_dir(run):
    """Directory of one run's landscape and sharpness outputs."""
    return paths.landscape_dir(RESULTS, run.run_id)


def experiment_pattern(names, negate=False):
    """Wildcard regex of an experiment in ``names`` (``negate``: of any experiment not in them)."""
    listed = "|".join(re.escape(name) for name in names) or "(?!)"  # (?!) matches nothing
    return f"(?!(?:{listed})/)[A-Za-z][A-Za-z0-9_]*" if negate else f"(?:{listed})"


def run_identity(experiment, head, variant, seed):
    """The identity of one run (fails clearly if the config does not define it)."""
    run = find_run(config, experiment, head, variant, seed)
    return {"experiment": run.experiment, "head": run.head, "seed": run.seed, "variant": run.variant}


# ---- diagnostics (normscape/pipeline/measures.py: which rule writes which measure file, for which runs)
def probe_settings(experiment):
    """Each training probe's config slice for runs of ``experiment`` (None: not probed by it), by name."""
    return {
        measure.name: (
            canonical(settings_of(config, measure.config))
            if experiment in measured_experiments(measure.file, config)
            else None
        )
        for measure in training_probes()
    }


def landscape_stage_files():
    """landscape.h5 and every enabled measure of the landscape directory (normscape/pipeline/measures.py)."""
    names = ["landscape.h5"] + [
        name
        for measure in MEASURES.values()
        if measure.location == "landscape" and (measure.rule != "curvature" or curvature_enabled(config))
        for name in measure.files
    ]
    return list(dict.fromkeys(names))


def claims_measure_files():
    """Every enabled measure's summary file by measure name (normscape/pipeline/measures.py), for the claims' run table."""
    return {
        name: run_files_of(measure.file)
        for name, measure in MEASURES.items()
        if (measure.rule != "curvature" or curvature_enabled(config)) and run_files_of(measure.file)
    }


def run_files_of(filename):
    """``filename`` of every run that has it computed."""
    experiments = [e for e in measured_experiments(filename, config) if e in config["experiments"]]
    return [path for experiment in experiments for path in run_files(experiment, filename)]


# ---- data and features stages
DATA = config["data"]
DATASET = datasets.get_dataset(DATA["dataset"])
# The feature store every later stage reads; with features.shards > 1 it is merged from per-shard parts.
FEATURES = f"{RESULTS}/features/features.h5"
SHARDS = config["features"]["shards"]
FEATURE_SHARD = f"features/shards{SHARDS}/part{{index}}"  # under results/ (and its logs/, benchmarks/)
# The official archive, fetched by download_data when data.archive is not set (datasets with a URL only).
DATA_DOWNLOAD = f"{DOWNLOADS}/data/{DATASET.archive_name}" if DATASET.url is not None else None


def data_source():
    """What prepare_data reads: the image root (imagefolder), a local archive, or the downloaded archive."""
    if DATASET.url is None:
        if not DATA["root"] or not Path(DATA["root"]).is_dir():
            sys.exit(
                f"normscape: data.root = {DATA['root']!r} is not a directory; point it at <class>/<image> folders."
            )
        return DATA["root"]
    local = DATA["archive"]
    if local:
        if not Path(local).is_file():
            sys.exit(
                f"normscape: data.archive = {local!r} does not exist. Fix the path, or set data.archive to "
                "null to download the official archive."
            )
        return local
    return DATA_DOWNLOAD


def data_inputs():
    """prepare_data's input files: the archive, or every file of the image tree (so adding, removing or editing
    an image anywhere in it reruns the data stage; a folder's own mtime only sees its direct entries)."""
    source = data_source()
    if DATASET.url is None:
        return {"images": sorted(str(p) for p in Path(source).rglob("*") if p.is_file())}
    return {"archive": source}


def download_targets():
    """The files the download rule fetches (none for a local archive or image root)."""
    return [] if DATA["archive"] or DATASET.url is None else [DATA_DOWNLOAD]


def is_weights_name(weights):
    """A torchvision weights name (IMAGENET1K_V1, DEFAULT, ...) rather than `random` or a file path. Whether the
    arch has it is checked by download_weights (torchvision is not imported while the workflow parses)."""
    return re.fullmatch(r"[A-Z][A-Z0-9_]*", weights) is not None


def backbone_weights_file():
    """The weights file extraction needs: downloaded torchvision weights, a local file, or none (random)."""
    arch, weights = config["backbone"]["arch"], config["backbone"]["weights"]
    if weights == "random":
        return []
    if is_weights_name(weights):
        return f"{DOWNLOADS}/weights/{arch}-{weights}.pth"
    if not Path(weights).is_file():
        sys.exit(
            f"normscape: backbone.weights = {weights!r} is neither a torchvision weights name of {arch} "
            "(e.g. IMAGENET1K_V1, DEFAULT), 'random', nor an existing file. Fix the path to a torchvision "
            f"{arch} state_dict."
        )
    return weights


# ---- figures: each figure's spec (inputs, head subsets, category) lives with its drawing (normscape/figures/registry.py)
def run_files(experiment, filename, heads=None):
    """The files ``filename`` of every run of ``experiment`` (optionally only some heads)."""
    runs = [r for r in experiment_runs(config, experiment) if heads is None or r.head in heads]
    if location_of(filename) == "landscape":
        return [f"{landscape_dir(r)}/{filename}" for r in runs]
    return [f"{run_dir(r)}/{filename}" for r in runs]


def figure_inputs(name):
    """Named input lists of a figure, or None when the config lacks an experiment (or a head) it needs."""
    spec = FIGURE_SPECS[name]
    inputs = {}
    for kind in FIGURE_INPUT_KINDS:
        for experiment, filename, heads in spec.inputs.get(kind, []):
            if experiment not in config["experiments"]:
                return None
            if experiment not in measured_experiments(filename, config):
                return None
            files = run_files(experiment, filename, heads)
            if not files:
                return None
            inputs.setdefault(kind, []).extend(files)
    return inputs


def figure_settings(name):
    """The figures slice, the shared training settings of the experiments the figure shows (its titles state
    them), plus the config slice its drawing reads (its spec's ``settings``)."""
    spec = FIGURE_SPECS[name]
    experiments = dict.fromkeys(e for kind in spec.inputs.values() for e, _, _ in kind)
    conditions = {e: experiment_conditions(config, e) for e in experiments}
    extra = settings_of(config, spec.settings) if spec.settings else {}
    return {**config["figures"], "conditions": conditions, **extra}


def missing_for_figure(name):
    """What the config lacks for a documented figure: the experiments (or landscape / heads) its spec needs."""
    missing = []
    for kind in FIGURE_INPUT_KINDS:
        for experiment, filename, heads in FIGURE_SPECS[name].inputs.get(kind, []):
            if experiment not in config["experiments"]:
                missing.append(f"experiment '{experiment}' (add experiments.{experiment})")
            elif experiment not in measured_experiments(filename, config):
                missing.append(f"{filename} of '{experiment}' (add it to the experiments of its measure, enabled)")
            elif not run_files(experiment, filename, heads):
                missing.append(f"heads {heads} in experiment '{experiment}'")
    return "; ".join(dict.fromkeys(missing))


wildcard_constraints:
    experiment="[A-Za-z][A-Za-z0-9_]*",
    head="[a-z0-9_]+",
    variant="[A-Za-z0-9_.+-]+",
    seed=r"\d+",


# ---- report: which entry the 3D figure gets (report.smk)
def report_is_zip():
    """Whether this is `snakemake --report <name>.zip`. A zip report stores files beside report.html, so the
    rotatable page (plotly.js inlined, > 2 MB) opens inside it; a single report.html embeds every file as a data:
    URL, which Chromium refuses above 2 MB: there the report shows a light page with the static image instead."""
    args = sys.argv[1:]
    for i, arg in enumerate(args):
        if arg == "--report":
            return i + 1 < len(args) and args[i + 1].endswith(".zip")
        if arg.startswith("--report="):
            return arg.endswith(".zip")
    return False


def interactive_entry(path, fig_name, shown):
    """``path`` as the figure's "3D" report entry when ``shown``, else a plain output."""
    if not shown:
        return path
    zip_report = report_is_zip()
    return report(
        path,
        caption=f"../report/{fig_name}.rst" if zip_report else "../report/interactive_preview.rst",
        category=FIGURE_SPECS[fig_name].category,
        labels={
            "figure": fig_name,
            "format": "interactive 3D (HTML)" if zip_report else "3D (static here; rotatable in the zip report)",
        },
    )
