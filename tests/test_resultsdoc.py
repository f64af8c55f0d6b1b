"""docs/results.md is generated from a finished study's tables (rule results_doc), and a hand edit is detected."""

from __future__ import annotations

import re

import pytest
from conftest import REPO, run_snakemake

from normscape.reporting.results_doc import check


def headings(text: str) -> list[str]:
    return re.findall(r"^#+ .*$", text.split("## Summary of all runs")[0], re.M)


@pytest.mark.slow
def test_the_results_document_is_generated_from_the_tables(tiny_workflow, tmp_path):
    config, _, results = tiny_workflow
    run_snakemake(["--cores", "1", "docs/results.md"], cwd=tmp_path, configfile=config)
    text = (tmp_path / "docs" / "results.md").read_text()
    assert check(text) is None
    # the tables are the workflow's own, verbatim under the document's headings (their own titles left out);
    # the inputs name the feature cache the runs were trained on
    for table in ("summary.md", "claims.md"):
        title, _, body = (results / "tables" / table).read_text().strip().partition("\n")
        assert title.startswith("# ") and title not in text.splitlines() and body.strip() in text
    import h5py

    with h5py.File(results / "features" / "features.h5") as f:
        assert f"`{f.attrs['identity']}`" in text and f"`{f.attrs['data_checksum']}`" in text
    assert str(results.parent) not in text  # no local path of this machine
    edited = text.replace("## Claims", "## Claims (edited)")
    assert check(edited) == "the body was edited after it was generated"


def test_the_committed_results_document_is_an_untouched_generated_one():
    text = (REPO / "docs" / "results.md").read_text()
    assert check(text) is None, (
        "docs/results.md was edited by hand: regenerate it (snakemake --cores 1 docs/results.md)"
    )
