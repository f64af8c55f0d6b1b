"""Failure behaviour through the real CLI: one clear message naming the problem and the fix, non-zero exit,
no traceback for user errors, finished outputs untouched. (Stage-level cases live beside their stages:
test_cifar.py, test_features.py, test_train.py, test_tracking.py.)"""

from __future__ import annotations

import copy

import pytest
from conftest import run_snakemake, write_config


def failing(cfg_or_text, tmp_path, target="all", dry=True):
    path = tmp_path / "config.yaml"
    if isinstance(cfg_or_text, str):
        path.write_text(cfg_or_text)
    else:
        write_config(cfg_or_text, path)
    args = (["-n"] if dry else ["--cores", "1"]) + [target]
    proc = run_snakemake(args, configfile=path, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-2000:]
    return out


def edit(cfg, dotted, value):
    cfg = copy.deepcopy(cfg)
    node = cfg
    *parents, last = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return cfg


@pytest.mark.parametrize(
    "dotted,value,expect",
    [
        ("training.lrate", 0.1, "unknown key(s) ['lrate']"),
        ("experiments.convergence.lr", "fast", "'experiments.convergence.lr'"),
        ("experiments.convergence.lr", -0.001, "must be > 0"),
        ("training.batch_size", 0, "'training.batch_size': value 0 is out of range"),
        ("experiments.convergence.heads", ["none", "weightnorm"], "'weightnorm' is not allowed"),
        ("experiments.convergence.heads", [], "'experiments.convergence.heads': the list is empty"),
        ("landscape.experiments", ["nope"], "experiment 'nope' is not defined"),
        ("backbone.precision", "fp8", "choose one of ['auto', 'fp32', 'bf16']"),
    ],
)
def test_invalid_config_is_rejected_before_any_job(tiny_config, tmp_path, dotted, value, expect):
    out = failing(edit(tiny_config, dotted, value), tmp_path)
    assert expect in out and "Traceback" not in out
    assert not (tmp_path / "results").exists()


def test_malformed_yaml(tmp_path):
    out = failing("data: {archive: [unclosed\n", tmp_path)
    # Snakemake parses --configfile itself and reports it without a traceback
    assert "not valid JSON or YAML" in out and "Traceback" not in out


def test_missing_local_archive_names_the_key(tiny_config, tmp_path):
    out = failing(edit(tiny_config, "data.archive", str(tmp_path / "nope.tar.gz")), tmp_path)
    assert "data.archive" in out and "does not exist" in out and "Traceback" not in out


def test_missing_weights_file_names_the_key(tiny_config, tmp_path):
    out = failing(edit(tiny_config, "backbone.weights", str(tmp_path / "w.pth")), tmp_path)
    assert "backbone.weights" in out and "Traceback" not in out


@pytest.mark.slow
def test_checksum_mismatch_fails_the_job_cleanly_and_leaves_no_output(tiny_config, tmp_path):
    cfg = edit(tiny_config, "data.checksum", "md5:" + "0" * 32)
    out = failing(cfg, tmp_path, target=f"{cfg['results_dir']}/data/cifar10.h5", dry=False)
    assert "checksum mismatch" in out and "data.checksum" in out
    assert "Traceback" not in out
    from pathlib import Path

    assert not Path(cfg["results_dir"], "data", "cifar10.h5").exists()


@pytest.mark.slow
def test_unreachable_download_explains_offline_use(tiny_config, tmp_path):
    cfg = edit(edit(tiny_config, "data.archive", None), "data.url", "http://127.0.0.1:9/cifar-10-python.tar.gz")
    out = failing(cfg, tmp_path, target=f"{cfg['downloads_dir']}/data/cifar-10-python.tar.gz", dry=False)
    assert "could not download" in out and "data.archive" in out and "Traceback" not in out


@pytest.mark.slow
def test_a_failing_job_leaves_finished_outputs_untouched(tiny_workflow, tmp_path):
    path, cfg, results = tiny_workflow
    features = results / "features" / "features.h5"
    summary = results / "runs" / "convergence" / "none" / "base" / "seed0" / "summary.json"
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in (features, summary)}
    # A new experiment whose run directory cannot be created (a file is in the way): its job fails.
    broken = edit(cfg, "experiments.extra", {"heads": ["layer"], "lr": 1e-3})
    blocker = results / "runs" / "extra"
    blocker.write_text("not a directory")  # the new run cannot create its directory: the job fails
    try:
        out = failing(broken, tmp_path, target="all", dry=False)
        assert "extra" in out
    finally:
        blocker.unlink()
    for p, (mtime, data) in before.items():
        assert p.stat().st_mtime_ns == mtime and p.read_bytes() == data


def test_yaml_error_in_config_yaml_names_file_line_and_column(tiny_config, tmp_path):
    (tmp_path / "config.yaml").write_text("data:\n  archive: [unclosed\nseeds: [0]\n")
    good = write_config(tiny_config, tmp_path / "tiny.yaml")
    proc = run_snakemake(["-n", "all"], cwd=tmp_path, configfile=good, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in out
    assert "config file config.yaml, line 3, column 6: invalid YAML" in out, out[-2000:]


def test_yaml_error_in_a_configfile_names_line_and_column_through_the_checker(tmp_path):
    # Snakemake parses --configfile in its CLI before any workflow code runs and reports only "not valid JSON
    # or YAML" (test_malformed_yaml); the message in docs/failures.md points to this checker for the position.
    import subprocess
    import sys

    bad = tmp_path / "mine.yaml"
    bad.write_text("training:\n  lr: 0.1\n   epochs: 3\n")
    proc = subprocess.run([sys.executable, "-m", "normscape.pipeline.config", str(bad)], capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert f"config file {bad}, line 3, column 10: invalid YAML" in proc.stderr, proc.stderr


def test_undefined_figure_names_the_missing_experiment(tiny_config, tmp_path):
    cfg = edit(tiny_config, "experiments", {k: v for k, v in tiny_config["experiments"].items() if k != "high_lr"})
    probed = [e for e in cfg["diagnostics"]["preconditioned_sharpness"]["experiments"] if e != "high_lr"]
    cfg = edit(cfg, "diagnostics.preconditioned_sharpness.experiments", probed)
    out = failing(cfg, tmp_path, target=f"{cfg['results_dir']}/figures/fig10_high_lr.pdf")
    assert "figure fig10_high_lr needs experiment 'high_lr' (add experiments.high_lr)" in out, out[-2000:]
    assert "No rule to produce" not in out and "Traceback" not in out


@pytest.mark.parametrize("cached", ["features/features.h5", "data/cifar10.h5"])
def test_corrupt_cache_is_reported_before_anything_is_deleted(tiny_config, tmp_path, features_file, cached):
    from pathlib import Path

    results = Path(tiny_config["results_dir"])
    bad = results / cached
    bad.parent.mkdir(parents=True)
    bad.write_bytes(features_file.read_bytes()[:5000])  # a truncated HDF5 file
    finished = results / "runs" / "convergence" / "none" / "base" / "seed0" / "summary.json"
    finished.parent.mkdir(parents=True)
    finished.write_text("{}")
    out = failing(tiny_config, tmp_path, target="all", dry=False)
    assert f"{bad} is truncated or corrupt" in out and f"Rebuild it: rm {bad} && snakemake" in out, out[-2000:]
    assert out.count("Rebuild it") == 1 and "Traceback" not in out
    assert finished.read_text() == "{}" and bad.stat().st_size == 5000


@pytest.mark.slow
def test_weights_that_are_not_a_state_dict_get_our_message(tiny_config, tmp_path):
    import torch
    import torchvision

    whole_model = tmp_path / "model.pth"
    torch.save(torchvision.models.mobilenet_v2(), whole_model)  # a pickled model, not a state_dict
    cfg = edit(tiny_config, "backbone.weights", str(whole_model))
    out = failing(cfg, tmp_path, target=f"{cfg['results_dir']}/features/features.h5", dry=False)
    assert f"backbone weights {whole_model} is not a PyTorch state_dict" in out, out[-3000:]
    assert "torch.save(model.state_dict(), path)" in out
    assert f"from a torchvision {cfg['backbone']['arch']} (backbone.arch)" in out  # the configured arch
    assert "weights_only" not in out and "Traceback" not in out
    for name, content in (("notes.txt", b"weights: see the wiki\n"), ("noise.pth", bytes(range(256)) * 20)):
        (tmp_path / name).write_bytes(content)
        out = failing(edit(tiny_config, "backbone.weights", str(tmp_path / name)), tmp_path, dry=False)
        assert f"backbone weights {tmp_path / name} is not a PyTorch state_dict: it is not a PyTorch file" in out


@pytest.mark.slow
def test_backbone_and_archive_mistakes_stop_the_workflow_before_the_feature_cache_is_touched(tiny_config, tmp_path):
    """Snakemake deletes a job's outputs when the job starts, and records the params of a job that failed: a typo
    found by the extraction job would cost the feature cache, and undoing it would rerun everything after it.
    These are checked when Snakemake is about to start jobs (onstart), before anything is deleted."""
    from pathlib import Path

    path = write_config(tiny_config, tmp_path / "c.yaml")
    features = Path(tiny_config["results_dir"]) / "features/features.h5"
    run_snakemake([str(features), "--cores", "1"], configfile=path)
    before = (features.read_bytes(), features.stat().st_mtime_ns)
    # an ordinary run skips the check (it imports torchvision): the cache records these very settings
    from normscape.features.store import built_from
    from normscape.pipeline.config import validate_config

    backbone = validate_config(copy.deepcopy(tiny_config))["backbone"]
    assert built_from(features, backbone, None) and not built_from(features, {**backbone, "arch": "resnet34"}, None)
    noise = tmp_path / "noise.pth"
    noise.write_bytes(bytes(range(256)) * 20)
    for dotted, value, expect in (
        ("backbone.arch", "resnet19", "backbone.arch 'resnet19' is not a torchvision classification model"),
        ("backbone.weights", "IMAGENET1K_V9", "'IMAGENET1K_V9' is not a torchvision weights name of resnet18"),
        ("backbone.weights", str(noise), f"backbone weights {noise} is not a PyTorch state_dict"),
        ("data.checksum", "sha256:0123abcd", f"checksum mismatch for {tiny_config['data']['archive']}"),
    ):
        out = failing(edit(tiny_config, dotted, value), tmp_path, target=str(features), dry=False)
        assert expect in out and "Traceback" not in out, (dotted, out[-2000:])
        assert (features.read_bytes(), features.stat().st_mtime_ns) == before, dotted
    proc = run_snakemake(["-n", str(features)], configfile=path)  # the config as it was: nothing to redo
    assert "Nothing to be done" in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-2000:]


@pytest.mark.slow
def test_diverged_landscape_run_still_gives_every_figure_and_the_table(tiny_config, tmp_path):
    import json
    from pathlib import Path

    cfg = edit(tiny_config, "experiments", {"convergence": {"heads": ["none", "batch"], "lr": 1.0e6}})
    path = write_config(cfg, tmp_path / "diverged.yaml")
    proc = run_snakemake(["all", "--cores", "2"], configfile=path, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Traceback" not in out, out[-3000:]
    results = Path(cfg["results_dir"])
    sharp = json.loads((results / "landscapes/convergence/none/base/seed0/sharpness.json").read_text())
    assert sharp["diverged"] is True and sharp["top_eigenvalue"] is None and sharp["hessian_trace"] is None
    assert sharp["reason"].startswith("the run diverged")
    for name in ("fig4_convergence_accuracy", "fig5_landscape_surface", "fig5_landscape_contour"):
        assert (results / "figures" / f"{name}.png").stat().st_size > 0
    for name in ("fig5_trajectory_pca", "fig_landscape_1d", "fig6_grad_hist_fc2"):
        assert (results / "figures" / f"{name}.png").stat().st_size > 0
    table = (results / "tables" / "summary.md").read_text()
    assert "### convergence" in table and "| Baseline (no norm) | 1 | 1/1 |" in table, table


# Every figure's experiments, two epochs each, for the all-diverged / all-dead cases below.
EVERY_FIGURE_EXPERIMENTS = {
    "convergence": {"heads": ["none", "layer"]},
    "clipping": {"heads": ["none", "layer"], "clip_grad_norm": 1.0},
    "high_lr": {"heads": ["none"]},
    "lr_sweep": {"heads": ["none"], "sweep": {"lr": [1.0, 10.0]}},  # times the case's lr
    "batch_size": {"heads": ["batch"], "sweep": {"batch_size": [8, 16]}},
    "stability": {"heads": ["none"], "sweep": {"lr": [1.0, 10.0]}},
    "stability_large_batch": {"heads": ["none"], "batch_size": 64, "sweep": {"lr": [1.0, 10.0]}},
}


@pytest.mark.slow
@pytest.mark.parametrize("case,lr", [("diverged", 1.0e30), ("dead", 1.0e-12)])
def test_every_figure_renders_when_no_run_of_an_experiment_learns(tiny_config, tmp_path, case, lr):
    """All runs diverged (lr 1e30: non-finite in the first epoch) or dead (lr 1e-12: nothing moves, every
    smoothness number is 0): every figure rule still draws, exit 0, no traceback; titles state the config's lr."""
    from pathlib import Path

    from normscape.figures.registry import FIGURES

    experiments = copy.deepcopy(EVERY_FIGURE_EXPERIMENTS)
    for exp in experiments.values():
        if "sweep" in exp and "lr" in exp["sweep"]:
            exp["sweep"]["lr"] = [lr * f for f in exp["sweep"]["lr"]]
        else:
            exp["lr"] = lr
    cfg = edit(edit(tiny_config, "experiments", experiments), "training.epochs", 2)
    path = write_config(cfg, tmp_path / f"{case}.yaml")
    proc = run_snakemake(["all", "--cores", "2"], configfile=path, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Traceback" not in out, out[-3000:]
    results = Path(cfg["results_dir"])
    drawn = {p.stem for p in (results / "figures").glob("*.png")}
    assert drawn == set(FIGURES), set(FIGURES) ^ drawn
    assert "normscape: final test accuracy (mean ± std over seeds)" in proc.stdout  # the closing overview
    assert "Baseline (no norm)" in proc.stdout and ("diverged" in proc.stdout) == (case == "diverged")
    log = (results / "logs" / "figures" / "fig4_convergence_accuracy.log").read_text()
    assert f"Exp. 1 (lr {'1e30' if case == 'diverged' else '1e-12'}): accuracy per epoch" in log, log


@pytest.mark.parametrize("where", ["config.yaml", "--configfile", "checker"])
def test_a_key_given_twice_is_rejected_with_file_line_and_column(tiny_config, tmp_path, where):
    import subprocess
    import sys

    import yaml

    text = yaml.safe_dump(tiny_config, sort_keys=False) + "training:\n  lr: 0.1\n"  # a second training block
    line = text.count("\n") - 1  # the second `training:` is the file's second-last line
    first = text.splitlines().index("training:") + 1
    if where == "config.yaml":
        (tmp_path / "config.yaml").write_text(text)
        proc = run_snakemake(["-n", "all"], cwd=tmp_path, check=False)
        name = "config.yaml"
    elif where == "--configfile":
        bad = tmp_path / "mine.yaml"
        bad.write_text(text)
        proc = run_snakemake(["-n", "all"], cwd=tmp_path, configfile=bad, check=False)
        name = str(bad)
    else:
        bad = tmp_path / "mine.yaml"
        bad.write_text("head: {hidden: 32, hidden: 64}\n")
        proc = subprocess.run(
            [sys.executable, "-m", "normscape.pipeline.config", str(bad)], capture_output=True, text=True
        )
        name, line, first = str(bad), 1, None
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in out, out[-2000:]
    if first is None:
        assert f"config file {name}, line 1, column 20: duplicate key 'hidden', first given at line 1, column 8" in out
    else:
        expect = f"config file {name}, line {line}, column 1: duplicate key 'training', first given at line {first},"
        assert expect in out, out[-2000:]
    assert "Keep one of them" in out


@pytest.mark.slow
def test_temp_files_of_an_interrupted_checkpoint_write_are_removed_when_the_run_finishes(tiny_config, tmp_path):
    """A kill during a checkpoint write leaves its temp file (atomic_path cannot remove it); the run's job,
    rerun, removes it with the checkpoint when the run has finished."""
    from pathlib import Path

    cfg = edit(tiny_config, "experiments", {"convergence": {"heads": ["none"], "lr": 2.0e-3}})
    run = Path(cfg["results_dir"]) / "runs" / "convergence" / "none" / "base" / "seed0"
    leftover = run / "checkpoints" / ".last.pt.k1ll3d.pt.tmp"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"half a checkpoint")
    run_snakemake([str(run / "summary.json"), "--cores", "1"], configfile=write_config(cfg, tmp_path / "c.yaml"))
    assert (run / "summary.json").is_file() and not (run / "checkpoints").exists()


def test_a_broken_plugin_is_one_message_before_any_job(tiny_config, tmp_path):
    broken = tmp_path / "my_norms.py"
    broken.write_text(
        "from normscape.models.norms import NormSpec, register\nregister(NormSpec('none', None, 'x', 'k'))\n"
    )
    out = failing(edit(tiny_config, "plugins", [str(broken)]), tmp_path)
    assert f"plugin {broken} failed while it was imported: ValueError: norm 'none' is registered twice" in out, out
    out = failing(edit(tiny_config, "plugins", [str(tmp_path / "nope.py")]), tmp_path)
    assert "plugins: " in out and "nope.py' is not a file" in out and "Traceback" not in out


@pytest.mark.slow
def test_a_corrupt_run_file_is_one_message_naming_it_and_the_fix(tiny_config, tmp_path):
    """A truncated grads.h5 (a disk that failed, a copy cut short): the figure job that reads it says which file
    and how to rebuild it, once, without h5py's traceback."""
    from pathlib import Path

    cfg = edit(tiny_config, "experiments", {"convergence": {"heads": ["none"], "lr": 2.0e-3}})
    path = write_config(cfg, tmp_path / "c.yaml")
    figure = f"{cfg['results_dir']}/figures/fig6_grad_hist_fc2.png"
    proc = run_snakemake([figure, "--cores", "1"], configfile=path)
    assert "final test accuracy" not in proc.stdout  # the study's overview: only after a run that wrote the tables
    grads = Path(cfg["results_dir"]) / "runs/convergence/none/base/seed0/grads.h5"
    grads.write_bytes(grads.read_bytes()[:3000])
    Path(figure).unlink()
    proc = run_snakemake([figure, "--cores", "1"], configfile=path, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in out, out[-3000:]
    assert f"{grads} is truncated or corrupt" in out and f"Rebuild it: rm {grads} && snakemake" in out, out[-3000:]
    # A metrics.csv that lost its last epochs still parses: the figure job compares it with the run's summary
    metrics, curves = grads.with_name("metrics.csv"), figure.replace("fig6_grad_hist_fc2", "fig4_convergence_accuracy")
    metrics.write_text("".join(metrics.read_text().splitlines(keepends=True)[:-2]))
    Path(curves).unlink(missing_ok=True)
    proc = run_snakemake([curves, "--cores", "1"], configfile=path, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in out, out[-3000:]
    assert f"run metrics {metrics} is truncated or corrupt" in out and "its summary.json records 8" in out, out[-3000:]


def write_run_files(run, epochs: int = 3):
    """A run's metrics.csv (the columns training writes) and the summary.json that records its epochs."""
    import json

    columns = "epoch,train_loss,train_acc,val_loss,val_acc,lr,grad_norm_mean,grad_norm_median,grad_norm_p99,"
    columns += "grad_norm_max,clipped_fraction,epoch_time_s,diverged"
    rows = [f"{e},{2.0 / e},0.{e},{2.1 / e},0.{e},0.001,1.0,1.0,2.0,3.0,0.0,0.5,0" for e in range(1, epochs + 1)]
    run.mkdir(parents=True)
    (run / "metrics.csv").write_text("\n".join([columns, *rows]) + "\n")
    (run / "summary.json").write_text(json.dumps({"epochs_completed": epochs}))
    return run / "metrics.csv"


@pytest.mark.parametrize(
    "damage,expect",
    [
        (lambda text: text[: text.rindex("\n", 0, -1) + 1], "(2 rows), its summary.json records 3"),  # whole rows
        (lambda text: text[:-3], "a row cut short"),  # mid-row: the row still parses, without its last fields
        (lambda text: text.splitlines()[0] + "\n", "(0 rows), its summary.json records 3"),  # only the header
        (lambda text: "", "No columns to parse"),
    ],
)
def test_a_metrics_file_cut_short_is_one_message_not_a_shorter_run(tmp_path, damage, expect):
    from normscape.pipeline.errors import DataError
    from normscape.reporting.run_files import load_metrics

    metrics = write_run_files(tmp_path / "runs/convergence/none/base/seed0")
    assert load_metrics([metrics])["epoch"].tolist() == [1, 2, 3]
    metrics.write_text(damage(metrics.read_text()))
    with pytest.raises(DataError) as err:
        load_metrics([metrics])
    assert f"run metrics {metrics} is truncated or corrupt" in str(err.value) and expect in str(err.value)
    assert f"Rebuild it: rm {metrics} && snakemake" in str(err.value)


def test_truncated_run_files_are_named_by_the_integrity_check(tmp_path):
    """What a job that failed on its inputs reports: a checkpoint cut in half is not a zip archive any more,
    a JSON or CSV file cut short does not parse; an intact file is no problem."""
    import torch

    from normscape.pipeline.integrity import check_file

    model = tmp_path / "model_final.pt"
    torch.save({"state_dict": {"w": torch.arange(4096.0)}}, model)
    summary = tmp_path / "summary.json"
    summary.write_text('{"epochs_completed": 3, "final": {"val_acc": 0.5}}')
    table = write_run_files(tmp_path / "run")
    for path in (model, summary, table):
        assert check_file(path) is None, path
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
        assert check_file(path).startswith(f"{path} is truncated or corrupt ("), path


@pytest.mark.parametrize(
    "run,expect",
    [
        ("runs/convergence/layer/base/seed0/summary.json", "run convergence/layer/base/seed0 is not part of"),
        ("runs/convergence/none/base/seed7/metrics.csv", "run convergence/none/base/seed7 is not part of"),
        ("landscapes/nope/none/base/seed0/landscape.h5", "experiment 'nope' is not defined in the config"),
    ],
)
def test_a_requested_run_the_config_lacks_is_one_message(tiny_config, tmp_path, run, expect):
    target = f"{tiny_config['results_dir']}/{run}"
    out = failing(tiny_config, tmp_path, target=target)
    assert f"normscape: {target}: {expect}" in out and "Traceback" not in out, out[-2000:]
    if "not part of" in expect:  # what the experiment has, to pick from
        assert "(its heads ['none', 'batch', 'rms'], variants ['base'], seeds [0])" in out, out[-2000:]


def test_a_target_under_results_when_results_dir_is_elsewhere_names_the_path_to_ask_for(tiny_config, tmp_path):
    """The README's paths start with results/, the default results_dir; with another one Snakemake only said
    "No rule to produce"."""
    target = "results/figures/fig4_convergence_accuracy.pdf"
    out = failing(tiny_config, tmp_path, target=target)
    results = tiny_config["results_dir"]
    assert f"normscape: {target}: this config writes its results under results_dir = {results}; ask for " in out
    assert f"{results}/figures/fig4_convergence_accuracy.pdf" in out and "Traceback" not in out, out[-2000:]


def test_a_directory_without_config_yaml_says_so(tmp_path):
    """`snakemake -d DIR --configfile mine.yaml` reads DIR/config.yaml too; without one, and with a config file that
    only overrides some keys, there are no experiments to run."""
    mine = tmp_path / "mine.yaml"
    mine.write_text("seeds: [0]\n")
    proc = run_snakemake(["-n", "all", "--configfile", str(mine)], cwd=tmp_path, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in out and "KeyError" not in out, out[-2000:]
    assert "the config defines no experiments: Snakemake found no config.yaml" in out, out[-2000:]


@pytest.mark.slow
def test_a_copied_cache_built_for_other_settings_is_rebuilt_and_no_finished_run_is_lost(tiny_config, tmp_path):
    """Snakemake rebuilds a cache whose settings changed only if it recorded them. A cache copied in from another
    study has no record: without the stale flag the runs after it were started, their outputs removed, and each
    job stopped at the cache's mismatch."""
    import shutil
    from pathlib import Path

    from normscape.features.store import read_attrs
    from normscape.pipeline.config import BASE_VARIANT

    built = Path(tiny_config["results_dir"]) / "features/features.h5"
    run_snakemake([str(built), "--cores", "1"], configfile=write_config(tiny_config, tmp_path / "first.yaml"))
    cfg = {**tiny_config, "results_dir": str(tmp_path / "copied")}
    features = tmp_path / "copied/features/features.h5"
    features.parent.mkdir(parents=True)
    shutil.copy2(built, features)
    run = tmp_path / "copied/runs/convergence/batch" / BASE_VARIANT / "seed0/summary.json"
    path = write_config(cfg, tmp_path / "copied.yaml")
    proc = run_snakemake([str(run), "--cores", "1"], configfile=path)
    assert "extract_features" not in proc.stdout + proc.stderr  # the copy serves the config it was built for
    edited = write_config(edit(cfg, "backbone.input_size", 48), tmp_path / "edited.yaml")
    plan = run_snakemake(["-n", str(run)], configfile=edited).stdout
    assert "rule extract_features" in plan, plan[-3000:]
    marker = features.parent / "cache_verdict.txt"
    assert "other settings: input_size: file has 64, config wants 48" in marker.read_text()
    run_snakemake([str(run), "--cores", "1"], configfile=edited)
    assert run.is_file() and read_attrs(features)["input_size"] == 48
    proc = run_snakemake(["-n", str(run)], configfile=edited)
    assert "Nothing to be done" in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-3000:]
    assert "the feature cache matches the config" in marker.read_text()
    # input_size left to the weights' own (null): resolved as extraction would, so the cache is rebuilt too
    unset = write_config(edit(cfg, "backbone.input_size", None), tmp_path / "unset.yaml")
    plan = run_snakemake(["-n", str(run)], configfile=unset).stdout
    assert "rule extract_features" in plan and "input_size: file has 48, config wants" in marker.read_text()
