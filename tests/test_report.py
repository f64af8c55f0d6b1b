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
import yaml
from conftest import config_conditions, run_snakemake

from normscape.models.norms import label

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
        browser = headless_chromium.Browser(tmp_path_factory.mktemp("chromium"), width=1366, height=900)
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


def claim_groups(results: Path) -> dict[str, list[dict]]:
    """claims.csv rows by claim (a claim tested by several measures, ``id[measure]``, is one claim)."""
    import csv

    groups: dict[str, list[dict]] = {}
    for row in csv.DictReader((results / "tables" / "claims.csv").open()):
        groups.setdefault(row["claim_id"].split("[")[0], []).append(row)
    return groups


def test_landing_page_is_a_generated_summary_of_the_study(page, tmp_path):
    """The description page: what was run, the headline numbers and a sentence per claim, read from the results;
    every report category explained; the config as readable YAML; no Markdown syntax anywhere."""
    import csv

    browser, cfg, results = page
    text = browser.evaluate("document.querySelector('.normscape-overview').innerText")
    # what was run, from the config (the tiny config's values, not config.yaml's defaults)
    exp, train = cfg["experiments"]["convergence"], cfg["training"]
    assert f"A frozen {cfg['backbone']['arch']} backbone" in text
    assert f"convergence: {len(exp['heads'])} heads, 1 seed, epochs {train['epochs']}, lr {exp['lr']}" in text
    assert "lr_sweep: 1 head, 1 seed" in text and "sweep lr = 0.001, 0.01" in text
    # the headline table: final-epoch test accuracy and lambda_max per head, as in summary.csv
    summary = csv.DictReader((results / "tables" / "summary.csv").open())
    rows = {r["head"]: r for r in summary if (r["experiment"], r["variant"]) == ("convergence", "base")}
    table = browser.evaluate(
        "[...document.querySelectorAll('.normscape-overview table tr')].map(r => [...r.cells].map(c => c.innerText))"
    )
    header = table[0]
    assert header[0] == "head" and header[-1] == "convergence\nλmax" and "high_lr\ntest acc %" in header
    assert len(table) == 1 + len(exp["heads"])
    accuracy, sharpness = header.index("convergence\ntest acc %"), header.index("convergence\nλmax")
    for cells in table[1:]:
        head = next(h for h, r in rows.items() if cells[0] == label(h))
        assert cells[accuracy] == f"{100 * float(rows[head]['final_test_acc_mean']):.1f}"
        assert cells[sharpness] == f"{float(rows[head]['top_eigenvalue_mean']):.3g}"
    # one finding sentence per claim: its text and verdict
    items = browser.evaluate(
        "[...document.querySelectorAll('.normscape-overview ul.claims li')].map(li => li.innerText)"
    )
    groups = claim_groups(results)
    assert len(items) == len(groups)
    for claim_rows, item in zip(groups.values(), items):
        assert claim_rows[0]["claim"].split(" — by the ")[0] in item
        assert all(f": {r['claim_verdict']}" in item for r in claim_rows)
    # "How to read it" names every category of this report
    categories = browser.evaluate("Object.keys(categories)")
    guide = text.split("How to read it.")[1]
    assert len(categories) >= 5 and all(f"{c}: " in guide for c in categories)
    # the config: YAML (nested keys indented), with this run's values
    config = browser.evaluate("document.querySelector('.normscape-overview details pre').textContent")
    assert f"  input_size: {cfg['backbone']['input_size']}\n" in config and f"results_dir: {results}\n" in config
    body = browser.evaluate("document.getElementById('app').innerText")
    assert "**" not in body and "``" not in body
    shot = browser.screenshot(shots_dir(tmp_path) / "report_landing.png")
    assert ink_fraction(shot, (slice(0, 600), slice(300, 900))) > 0.02  # the summary at the top, in view


def test_claims_page_renders_markdown_and_keeps_the_verdict_in_view(page, tmp_path):
    """No raw Markdown in the claims table, a caption saying what the verdicts and the CI mean, and the verdict
    column inside the report's frame at 1366 px (the frame's width measured in the report itself)."""
    browser, cfg, results = page
    key = str(results / "tables/claims.html")
    html = decoded(browser, key)
    assert "**" not in html and "<strong>" in html and "How to read the verdicts" in html
    browser.evaluate(f"app.setView({{content: 'html', contentPath: results[{key!r}].data_uri}})")
    frame = browser.wait_for("(f => f && f.getBoundingClientRect().width)(document.querySelector('#app iframe'))")
    browser.evaluate("new Promise(r => setTimeout(r, 1000))")
    browser.screenshot(shots_dir(tmp_path) / "report_claims.png")
    # the page the frame shows, at the frame's size (its document is not reachable from the report: data: URL)
    with headless_chromium.Browser(tmp_path / "claims", width=int(frame), height=900) as alone:
        alone.open((results / "tables/claims.html").as_uri())
        alone.wait_for("document.readyState === 'complete' && !!document.querySelector('table')")
        verdicts = alone.evaluate(
            "[...document.querySelectorAll('table')].map(t => {"
            " const i = [...t.rows[0].cells].findIndex(c => c.innerText === 'verdict');"
            " return [...t.rows].map(r => r.cells[i].getBoundingClientRect().right); })"
        )
        headings = alone.evaluate("[...document.querySelectorAll('h3')].map(h => h.innerText)")
    assert verdicts and all(0 < right <= frame for table in verdicts for right in table), (frame, verdicts)
    claim_ids = {r["claim_id"] for rows in claim_groups(results).values() for r in rows}
    assert len(headings) == len(claim_ids) and all("*" not in h for h in headings)


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
    # one table per experiment: its header + one row per (norm, swept value)
    experiments = len(cfg["experiments"])
    assert html.count("<tr>") == experiments + config_conditions(cfg) and html.count("<table>") == experiments
    assert '<td class="text">BatchNorm</td>' in html and "test acc, final epoch" in html
    browser.evaluate("app.showCategory('tables')")
    assert "Summary of all runs" in browser.wait_for("document.body.innerText")
    browser.evaluate(f"app.setView({{content: 'html', contentPath: results[{key!r}].data_uri}})")
    browser.wait_for("!!document.querySelector('#app iframe')")
    browser.evaluate("new Promise(r => setTimeout(r, 1000))")
    shot = browser.screenshot(shots_dir(tmp_path) / "report_summary_table.png")
    assert ink_fraction(shot, (slice(0, 900), slice(300, 1400))) > 0.01


def test_single_file_report_shows_the_3d_figure_as_a_static_image(page, tmp_path):
    """A single report.html cannot open the rotatable page (a data: URL over Chromium's 2 MB): its "3D" entry is
    a light page with the static image and where the rotatable version is, and it is drawn, not blank."""
    browser, cfg, results = page
    key = str(results / "figures/preview/fig5_landscape_surface.html")
    found = entries(browser)
    assert str(results / "figures/fig5_landscape_surface.html") not in found
    assert found[key]["labels"] == {
        "figure": "fig5_landscape_surface",
        "format": "3D (static here; rotatable in the zip report)",
    }
    assert "report.zip" in found[key]["caption"]
    assert len(browser.evaluate(f"results[{key!r}].data_uri")) < 2 * 1024 * 1024  # Chromium opens it
    html = decoded(browser, key)
    assert "data:image/png;base64," in html and "results/figures/fig5_landscape_surface.html" in html
    browser.evaluate(f"app.setView({{content: 'html', contentPath: results[{key!r}].data_uri}})")
    browser.wait_for("!!document.querySelector('#app iframe')")
    browser.evaluate("new Promise(r => setTimeout(r, 1500))")
    shot = browser.screenshot(shots_dir(tmp_path) / "report_3d_static.png")
    assert ink_fraction(shot, (slice(100, 500), slice(300, 1300))) > 0.05  # the image, drawn


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
        frame = browser.evaluate("document.querySelector('#app iframe').getBoundingClientRect().width")
        inner = page.parent / browser.evaluate(f"results[{key!r}].data_uri")
    # every head's 3D panel inside the frame (the file the frame shows, opened at the frame's width)
    with headless_chromium.Browser(tmp_path / "frame", width=int(frame), height=900) as alone:
        alone.open(inner.as_uri())
        alone.wait_for("document.querySelectorAll('.gl-container > div').length > 0")
        panels = alone.evaluate(
            "[...document.querySelectorAll('.gl-container > div')].map(d => d.getBoundingClientRect().right)"
        )
    heads = len(yaml.safe_load(configfile.read_text())["experiments"]["convergence"]["heads"])
    assert len(panels) == heads and all(0 < right <= frame for right in panels), (frame, panels)


def test_a_finished_study_prints_its_overview(tiny_workflow):
    """`snakemake all` ends with the accuracy per head and experiment, each claim's verdict, and where the report
    is (Snakefile onsuccess: normscape.reporting.overview), read from the generated tables."""
    import csv

    from normscape.reporting.overview import study_overview

    path, _, results = tiny_workflow
    text = study_overview(results)
    rows = list(csv.DictReader((results / "tables" / "summary.csv").open()))
    none = next(r for r in rows if (r["experiment"], r["head"], r["variant"]) == ("convergence", "none", "base"))
    assert f"{100 * float(none['final_test_acc_mean']):.1f} %" in text
    claims = {r["claim"] for r in csv.DictReader((results / "tables" / "claims.csv").open())}
    assert all(f"  - {claim}: " in text for claim in claims) and text.count("\n  - ") == len(claims)
    assert f"snakemake --report {results / 'report.html'}" in text
    assert study_overview(results / "nothing") is None
    # what a run prints at its end: the tables if it wrote them, else nothing (they may predate a config edit)
    written = (results / "tables" / "summary.csv").stat().st_mtime
    assert study_overview(results, written_since=written) == text
    assert study_overview(results, written_since=written + 1) is None
    # the report command repeats the options that chose the config (without them it reads config.yaml's runs)
    argv = ["snakemake", "all", "--cores", "2", "--configfile", str(path), "--replace-workflow-config", "-k"]
    argv += ["--config", "figures={smoothing_window: 1}", "seeds=[0]", "--keep-going", "--profile", "p", "all"]
    line = next(x for x in study_overview(results, argv=argv).splitlines() if x.startswith("report: "))
    assert line == (
        f"report: snakemake --report {results / 'report.html'} --configfile {path} --replace-workflow-config "
        "--config 'figures={smoothing_window: 1}' 'seeds=[0]' --profile p  (one self-contained HTML file)"
    )
    from normscape.reporting.overview import config_options

    assert config_options(["snakemake", "-j2", "-d/x", "all", "-s", "S", "t.pdf", "--directory=/y", "-Cseeds=[0]"]) == [
        "-d/x",
        "-s",
        "S",
        "--directory=/y",
        "-Cseeds=[0]",
    ]
