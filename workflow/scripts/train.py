"""Train one head under one condition and seed (rule train)."""

from pathlib import Path

from normscape.featurestore import expected_attrs
from normscape.paths import run_id
from normscape.runtime import script_main
from normscape.sharedruns import reuse_run
from normscape.tracking import WandbTracker, provenance


def main(smk):
    p = smk.params
    run = dict(p.run)
    name = run_id(run["experiment"], run["head"], run["variant"], run["seed"])
    run_dir, settings = Path(smk.output.summary).parent, (dict(p.training), dict(p.head), dict(p.grad_hist))
    smoothness_paths = (smk.output.smoothness_h5, smk.output.smoothness_json)

    def wandb_run(resolved, **extra):
        config = {**resolved, "provenance": provenance(smk.input.features), **extra}
        return WandbTracker(dict(p.wandb), p.wandb_dir, run_name=name, group=run["experiment"], config=config)

    if p.shared_from:  # the same training as another run of the study: its results under this run's name
        replay = lambda resolved: wandb_run(resolved, shared_training=p.shared_from)  # noqa: E731
        owner_dir = Path(smk.input.shared_summary).parent
        reuse_run(owner_dir, run_dir, run, *settings, tracker_factory=replay, smoothness_paths=smoothness_paths)
        return
    from normscape.train import train_run  # imports torch: only a job that trains pays for it

    def tracker(resolved, trainer):
        wandb = wandb_run(resolved)
        steps_done = sum(len(s) for s in trainer.step_norms)  # a resumed run continues its step count
        wandb.watch(trainer.names, trainer.params, trainer.opt, p.wandb["watch_log_freq"], steps_done)
        return wandb

    train_run(
        smk.input.features,
        run_dir,
        run,
        *settings,
        tracker_factory=tracker,
        features_expected=expected_attrs(
            p.features_request["backbone"], p.features_request["data"], cache=smk.input.features
        ),
        landscape_inputs="trajectory" in smk.output.keys(),  # model_init.pt + trajectory.pt: a landscape reads them
        smoothness=dict(p.smoothness) if p.smoothness else None,
        smoothness_paths=smoothness_paths,
        model_code=p.model_code,
    )


script_main(snakemake, main)  # noqa: F821
