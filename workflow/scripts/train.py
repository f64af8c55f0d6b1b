"""Train the runs of one job together: every seed of one (experiment, head, swept value), or of every value of an
lr sweep (rules train_<experiment>)."""

from pathlib import Path

from normscape.features.store import expected_attrs
from normscape.pipeline.paths import run_id
from normscape.pipeline.runtime import script_main
from normscape.training.wandb_payload import provenance
from normscape.training.wandb_tracking import WandbTracker


def main(smk):
    from normscape.training.job import train_group  # imports torch: only jobs that train pay for it

    p = smk.params
    wandb_settings = smk.config["tracking"]["wandb"]  # not a param (see the rule)
    runs = [dict(run) for run in p.runs]
    run_dirs = [Path(summary).parent for summary in smk.output.summary]

    def tracker(resolved, record):
        config = {**resolved, "provenance": provenance(smk.input.features)}
        run = resolved["run"]
        name = run_id(run["experiment"], run["head"], run["variant"], run["seed"])
        wandb = WandbTracker(dict(wandb_settings), p.wandb_dir, run_name=name, group=run["experiment"], config=config)
        wandb.watch(wandb_settings["watch_log_freq"], record.steps_done)  # a resumed run continues its step count
        return wandb

    train_group(
        smk.input.features,
        run_dirs,
        runs,
        [dict(training) for training in p.training],
        dict(p.head),
        dict(p.grad_hist),
        tracker_factory=tracker,
        features_expected=expected_attrs(
            p.features_request["backbone"], p.features_request["data"], cache=smk.input.features
        ),
        # model_init.pt + trajectory.pt: a landscape reads them. From the outputs, not a param: removing an
        # experiment from landscape.experiments must rerun nothing (a param change would)
        landscape_inputs="trajectory" in smk.output.keys(),
        probes={name: dict(s) if s else None for name, s in p.probes.items()},
        probe_paths={name: list(zip(smk.output[f"{name}_h5"], smk.output[f"{name}_json"])) for name in p.probes},
        model_code=p.model_code,
    )


script_main(snakemake, main, torch_job=True)  # noqa: F821  (subnormals flushed: normscape.pipeline.runtime)
