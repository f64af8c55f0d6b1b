"""The report's landing page, generated from the summary and claims tables (rule overview)."""

from normscape.pipeline.runtime import script_main
from normscape.reporting.landing_page import write_overview


def main(smk):
    o = smk.output
    write_overview(smk.input.summary, smk.input.claims, smk.params.config, smk.params.categories, o.fragment, o.page)


script_main(snakemake, main)  # noqa: F821
