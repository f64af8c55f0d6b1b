"""The Snakemake report of the tiny workflow, rendered in a real headless Chromium: the description page (with the
config), every figure (decoded by the browser), the summary table as an HTML table, the interactive 3D surface,
labels and config-valued captions. Screenshots go to $NORMSCAPE_SCREENSHOTS (default: the test's tmp dir)."""

from __future__ import annotations

import base64
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run_snakemake

sys.path.insert(0, str(Path(__file__).parent / "browser"))
import headless_chromium  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def report(tiny_workflow):
    configfile, cfg, results = tiny_workflow
    path = results.parent / "report.html"
    run_snakemake(["--report", str(path)], configfile=configfile)
    return path, cfg, results


@pytest.fixture(scope="module")
def page(report, tmp_path_factory):
    try:
        browser = headless_chromium.Browser(tmp_path_factory.mktemp("chromium"))
    except headless_chromium.BrowserUnavailable as exc:
        pytest.skip(f"no Chromium: {exc}")
    path, cfg, results = report
    browser.open(path.as_uri())
    browser.wait_for("typeof app !== 'undefined' && document.readyState === 'complete'")
    yield browser, cfg, results
    browser.close()


def shots_dir(tmp_path) -> Path:
    d = Path(os.environ.get("NORMSCAPE_SCREENSHOTS", tmp_path))
    d.mkdir(parents=True, exist_ok=True)
    return d


def ink_fraction(png: Path, box: tuple[slice, slice]) -> float:
    """Fraction of pixels in ``box`` that differ from that region's most common colour (0 = blank)."""
    import matplotlib.image

    img = (matplotlib.image.imread(png)[box][..., :3] * 255).astype(np.uint8).reshape(-1, 3)
    colours, counts = np.unique(img, axis=0, return_counts=True)
    return 1.0 - counts.max() / counts.sum()


def entries(browser) -> dict:
    return browser.evaluate(
        "Object.fromEntries(Object.entries(results).map(([k, v]) => "
        "[k, {mime: v.mime_type, labels: v.labels, caption: v.caption}]))"
    )


def decoded(browser, path: str) -> str:
    uri = browser.evaluate(f"results[{path!r}].data_uri")
    return base64.b64decode(uri.split("base64,", 1)[1]).decode()


def test_description_page_shows_study_and_config(page, tmp_path):
    browser, cfg, results = page
    text = browser.evaluate("document.body.innerText")
    assert "What this study is" in text and "How to read it" in text
    # the config that produced the report, with this run's values (not the defaults of config.yaml)
    assert f'"input_size": {cfg["backbone"]["input_size"]}' in text
    assert str(results) in text
    exp, train = cfg["experiments"]["convergence"], cfg["training"]
    heads = ", ".join(exp["heads"])
    assert f"convergence: heads {heads}; lr {exp['lr']}, batch {train['batch_size']}, {train['epochs']} epochs" in text
    assert f"A frozen {cfg['backbone']['arch']} backbone" in text
    shot = browser.screenshot(shots_dir(tmp_path) / "report_description.png")
    assert ink_fraction(shot, (slice(0, 900), slice(300, 1400))) > 0.02


def test_every_figure_is_labelled_captioned_and_renders(page, tmp_path):
    browser, cfg, results = page
    found = entries(browser)
    pngs = sorted((results / "figures").glob("*.png"))
    assert len(pngs) >= 7
    for png in pngs:
        entry = found[str(png)]
        assert entry["mime"] == "image/png" and entry["labels"]["figure"] == png.stem
        assert entry["caption"].strip(), png.name
        browser.evaluate(f"app.setView({{content: 'img', contentPath: results[{str(png)!r}].data_uri}})")
        width = browser.wait_for(
            f"(i => i && i.complete && i.naturalWidth)([...document.querySelectorAll('img')]"
            f".find(i => i.src === results[{str(png)!r}].data_uri))"
        )
        assert width > 300, png.name  # decoded by the browser, not just listed
    browser.evaluate(f"app.setView({{content: 'img', contentPath: results[{str(pngs[0])!r}].data_uri}})")
    shot = browser.screenshot(shots_dir(tmp_path) / f"report_{pngs[0].stem}.png")
    assert ink_fraction(shot, (slice(0, 900), slice(300, 1400))) > 0.02


def test_captions_state_the_config_values(page):
    browser, cfg, results = page
    found = entries(browser)
    fig4 = found[str(results / "figures/fig4_convergence_accuracy.png")]["caption"]
    exp, train = cfg["experiments"]["convergence"], cfg["training"]
    # the tiny config's values, not config.yaml's defaults (batch 64, 15 epochs)
    assert f"lr {exp['lr']}, batch {train['batch_size']}, {train['epochs']} epochs" in fig4
    assert "running average of 3 epochs" in fig4
    fig6 = found[str(results / "figures/fig6_grad_hist_fc2.png")]["caption"]
    assert "red dots" in fig6 and "white dots" not in fig6
    assert "4 bins per octave from 1e-09 to 10.0" in fig6
    surface = found[str(results / "figures/fig5_landscape_surface.png")]["caption"]
    assert "5 × 5 grid" in surface and "showResultInfo" in surface  # links to the interactive version


def test_summary_table_is_an_html_table(page, tmp_path):
    browser, cfg, results = page
    found = entries(browser)
    key = str(results / "tables/summary.html")
    assert found[key]["mime"] == "text/html" and found[key]["labels"] == {"table": "Summary of all runs"}
    assert str(results / "tables/summary.md") not in found  # not offered as a Markdown download
    html = decoded(browser, key)
    runs = len(cfg["experiments"]["convergence"]["heads"]) + len(cfg["experiments"]["lr_sweep"]["sweep"]["lr"])
    assert html.count("<tr>") == 1 + runs  # header + one row per head of convergence and per lr of lr_sweep
    assert "<td>BatchNorm</td>" in html and "test acc, final epoch" in html
    browser.evaluate("app.showCategory('tables')")
    assert "Summary of all runs" in browser.wait_for("document.body.innerText")
    browser.evaluate(f"app.setView({{content: 'html', contentPath: results[{key!r}].data_uri}})")
    browser.wait_for("!!document.querySelector('#app iframe')")
    browser.evaluate("new Promise(r => setTimeout(r, 1000))")
    shot = browser.screenshot(shots_dir(tmp_path) / "report_summary_table.png")
    assert ink_fraction(shot, (slice(0, 900), slice(300, 1400))) > 0.01


def test_interactive_surface_is_self_contained(page, tmp_path):
    browser, cfg, results = page
    key = str(results / "figures/fig5_landscape_surface.html")
    found = entries(browser)
    assert found[key]["labels"] == {"figure": "fig5_landscape_surface", "format": "interactive 3D (HTML)"}
    html = decoded(browser, key)
    assert '"type":"surface"' in html.replace(" ", "") and "src=" not in html.split("<body>")[0]
    browser.evaluate(f"app.setView({{content: 'html', contentPath: results[{key!r}].data_uri}})")
    browser.wait_for("!!document.querySelector('#app iframe')")
    browser.evaluate("new Promise(r => setTimeout(r, 3000))")
    browser.screenshot(shots_dir(tmp_path) / "report_interactive_surface.png")


def test_zip_report_shows_the_rotatable_surface_inside(report, tmp_path):
    """Chromium does not display embedded files over 2 MB (URL limit), so a single-file report only lists the
    interactive figure; the zip report (README) stores files beside report.html and shows it rotatable inside."""
    import zipfile

    configfile = report[0].parent / "config.yaml"
    results = report[2]
    archive = tmp_path / "report.zip"
    run_snakemake(["--report", str(archive)], configfile=configfile)
    zipfile.ZipFile(archive).extractall(tmp_path / "unzipped")
    page = tmp_path / "unzipped" / "report" / "report.html"
    try:
        browser = headless_chromium.Browser(tmp_path / "chromium")
    except headless_chromium.BrowserUnavailable as exc:
        pytest.skip(f"no Chromium: {exc}")
    with browser:
        browser.open(page.as_uri())
        browser.wait_for("typeof app !== 'undefined' && document.readyState === 'complete'")
        key = str(results / "figures/fig5_landscape_surface.html")
        assert not browser.evaluate(f"results[{key!r}].data_uri").startswith("data:")  # a file beside the report
        browser.evaluate(f"app.setView({{content: 'html', contentPath: results[{key!r}].data_uri}})")
        browser.wait_for("!!document.querySelector('#app iframe')")
        browser.evaluate("new Promise(r => setTimeout(r, 5000))")  # plotly.js (4 MB) parses and draws (WebGL)
        shot = browser.screenshot(shots_dir(tmp_path) / "report_zip_interactive_surface.png")
        assert ink_fraction(shot, (slice(0, 500), slice(300, 1200))) > 0.05


def test_a_finished_study_prints_its_overview(tiny_workflow):
    """`snakemake all` ends with the accuracy per head and experiment, each claim's verdict, and where the report
    is (Snakefile onsuccess: normscape.overview), read from the generated tables."""
    import csv

    from normscape.overview import study_overview

    _, _, results = tiny_workflow
    text = study_overview(results)
    rows = list(csv.DictReader((results / "tables" / "summary.csv").open()))
    none = next(r for r in rows if (r["experiment"], r["head"], r["variant"]) == ("convergence", "none", "base"))
    assert f"{100 * float(none['final_test_acc_mean']):.1f} %" in text
    claims = {r["claim"] for r in csv.DictReader((results / "tables" / "claims.csv").open())}
    assert all(f"  - {claim}: " in text for claim in claims) and text.count("\n  - ") == len(claims)
    assert f"snakemake --report {results / 'report.html'}" in text
    assert study_overview(results / "nothing") is None
