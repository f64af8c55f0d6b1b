"""Train every seed of one (experiment, head, swept value) together (rules train_<experiment>)."""

from pathlib import Path

from normscape.featurestore import expected_attrs
from normscape.paths import run_id
from normscape.runtime import script_main
from normscape.tracking import WandbTracker, provenance


def main(smk):
    from normscape.trainjob import train_group  # imports torch: only jobs that train pay for it

    p = smk.params
    runs = [dict(run) for run in p.runs]
    run_dirs = [Path(summary).parent for summary in smk.output.summary]
    names = {int(run["seed"]): run_id(run["experiment"], run["head"], run["variant"], run["seed"]) for run in runs}

    def tracker(resolved, record):
        config = {**resolved, "provenance": provenance(smk.input.features)}
        group = runs[0]["experiment"]
        wandb = WandbTracker(dict(p.wandb), p.wandb_dir, run_name=names[record.seed], group=group, config=config)
        wandb.watch(p.wandb["watch_log_freq"], record.steps_done)  # a resumed run continues its step count
        return wandb

    train_group(
        smk.input.features,
        run_dirs,
        runs,
        dict(p.training),
        dict(p.head),
        dict(p.grad_hist),
        tracker_factory=tracker,
        features_expected=expected_attrs(
            p.features_request["backbone"], p.features_request["data"], cache=smk.input.features
        ),
        # model_init.pt + trajectory.pt: a landscape reads them. From the outputs, not a param: removing an
        # experiment from landscape.experiments must rerun nothing (a param change would)
        landscape_inputs="trajectory" in smk.output.keys(),
        smoothness=dict(p.smoothness) if p.smoothness else None,
        smoothness_paths=list(zip(smk.output.smoothness_h5, smk.output.smoothness_json)),
        model_code=p.model_code,
    )


script_main(snakemake, main, torch_job=True)  # noqa: F821  (subnormals flushed: normscape.runtime)
