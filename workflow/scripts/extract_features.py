"""Extract frozen-backbone features of every split into one HDF5 file, or one shard of it (rule extract_features)."""

from normscape.features.extract import extract_features
from normscape.pipeline.runtime import script_main


def main(smk):
    b = smk.params.backbone
    extract_features(
        smk.input.dataset,
        smk.output[0],
        weights=b["weights"],
        weights_file=smk.input.weights or None,
        weights_sha256=b["weights_sha256"],
        input_size=b["input_size"],
        precision=b["precision"],
        batch_size=b["batch_size"],
        device=b["device"],
        arch=b["arch"],
        shard=tuple(smk.params.shard) if smk.params.shard else None,
    )


script_main(snakemake, main, torch_job=True)  # noqa: F821  (subnormals flushed: normscape.pipeline.runtime)
