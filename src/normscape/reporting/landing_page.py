"""The report's landing page: the study on one screen, generated from its results (never written by hand).

What was run (from the config), the headline table — final-epoch test accuracy and sharpness (λmax) per head and
experiment, mean ± std over seeds, read from ``tables/summary.csv`` — each claim with its verdict in one sentence
(from ``tables/claims.csv``), how to read every report category present, and the config as YAML. Written twice:
an HTML fragment that the report's description page (workflow/report/workflow.rst) includes, and the same content
as a standalone page (a report entry, also readable without Snakemake).
"""

from __future__ import annotations

import csv
import html
import json
import math
from collections.abc import Iterable
from pathlib import Path

import yaml

from normscape.models.norms import label
from normscape.pipeline.atomic import write_text
from normscape.reporting.run_files import norm_sort_key

#: What each report category holds and how to read it; every category the report shows must be here (a test
#: checks the built-in figures' categories), so the landing page never skips one.
CATEGORY_GUIDE = {
    "experiments": "accuracy and loss per epoch of every head: the mean over seeds (line) with a ±1 standard "
    'deviation band; crosses or a "diverged" note mark runs whose loss became non-finite.',
    "gradients": "per-epoch histograms of |grad| of a layer (colour: fraction of gradient elements per log bin) "
    "with the mean |grad| per epoch as dots; with clipping, the gradient the optimiser applied.",
    "landscapes": "the loss around each trained head along filter-normalised random directions (Li et al. 2018) "
    "as 2D contours, 3D surfaces and 1D slices, and the training trajectory on its PCA plane; evaluated in eval "
    "mode (BatchNorm with running statistics), so heads share one scale. The 3D surfaces are also rotatable "
    "in the zip report (a single-file report shows them as a static image there).",
    "appendix": "the sweeps: gradient histograms across learning rates and test accuracy across batch sizes; a "
    "sweep run with one seed has no error bars, so only differences larger than the seed-to-seed spread of the "
    "main experiments are effects.",
    "diagnostics": "curvature and smoothness of each final head: Hessian eigenvalue density, adaptive sharpness "
    "(average and worst case) and the smoothness of the loss along the training trajectory (Santurkar et al. "
    "2018); lower = flatter / smoother.",
    "stability": "Adam's edge of stability (Cohen et al. 2022): the largest eigenvalue of Adam's preconditioned "
    "Hessian along training against its stability threshold (2+2β1)/((1−β1)η), and the stability map: final test "
    "accuracy over a learning-rate grid per norm with diverged runs and the critical learning rate marked.",
    "tables": "this summary, every run's numbers per experiment (summary) and every claim tested across seeds "
    '(claims: a verdict per comparison, with what "supported" means at this number of seeds).',
}

# The report centres its description page vertically: a page taller than the window (the rule graph beside it)
# loses its top, the study's summary, above the scrollable area; the first rule starts it at the top instead,
# the second gives the tables room.
CSS = """
.h-screen.overflow-auto:has(.normscape-overview) { align-items: flex-start; }
.prose.max-w-lg:has(.normscape-overview) { max-width: 64rem; }
.prose:has(.normscape-overview) h1 { font-size: 1.6rem; margin-bottom: 0.6rem; }
.normscape-overview { font-size: 13px; line-height: 1.45; }
.normscape-overview table { border-collapse: collapse; margin: 6px 0 10px; font-size: 12px; width: auto; }
.normscape-overview th, .normscape-overview td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
.normscape-overview th { background: #f0f0f0; }
.normscape-overview td:first-child, .normscape-overview th:first-child { text-align: left; white-space: nowrap; }
.normscape-overview ul { margin: 4px 0; padding-left: 1.2em; }
.normscape-overview li { margin: 2px 0; }
.normscape-overview pre { white-space: pre-wrap; overflow-wrap: anywhere; font-size: 11px; }
.normscape-overview .supported { color: #1a7f37; } .normscape-overview .refuted { color: #b42318; }
"""


def _rows(path: Path) -> list[dict]:
    with Path(path).open(newline="") as fh:
        return list(csv.DictReader(fh))


def _num(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _mean_std(row: dict, column: str, scale: float, digits: str) -> str:
    mean, std = _num(row.get(f"{column}_mean")), _num(row.get(f"{column}_std"))
    if not math.isfinite(mean):
        return "—"
    text = f"{mean * scale:{digits}}"
    return text + (f" ± {std * scale:{digits}}" if math.isfinite(std) else "")


def experiment_settings(config: dict, name: str) -> dict:
    """The settings an experiment runs with: its own keys over the training defaults."""
    exp, training = config["experiments"][name], config.get("training", {})
    keys = ("epochs", "batch_size", "lr", "clip_grad_norm")
    return {
        **{k: exp.get(k, training.get(k)) for k in keys},
        "seeds": exp.get("seeds", config.get("seeds", [])),
        "heads": exp.get("heads", []),
        "sweep": exp.get("sweep") or {},
    }


SETTING_NAMES = {"epochs": "epochs", "lr": "lr", "batch_size": "batch"}


def what_was_run(config: dict) -> str:
    backbone, data, head = config.get("backbone", {}), config.get("data", {}), config.get("head", {})
    heads = sorted({h for e in config["experiments"].values() for h in e.get("heads", [])}, key=norm_sort_key)
    items = []
    for name in config["experiments"]:
        s = experiment_settings(config, name)
        sweep = "; sweep " + ", ".join(f"{k} = {', '.join(map(str, v))}" for k, v in s["sweep"].items())
        settings = [f"{len(s['heads'])} head{'s' if len(s['heads']) != 1 else ''}"]
        settings.append(f"{len(s['seeds'])} seed{'s' if len(s['seeds']) != 1 else ''}")
        settings += [f"{word} {s[k]}" for k, word in SETTING_NAMES.items() if k not in s["sweep"]]
        settings.append(f"clipping {s['clip_grad_norm'] or 'off'}" if "clip_grad_norm" not in s["sweep"] else "")
        items.append(
            f"<li><b>{html.escape(name)}</b>: {html.escape(', '.join(x for x in settings if x))}"
            f"{html.escape(sweep) if s['sweep'] else ''}</li>"
        )
    return (
        f"<p><b>What was run.</b> A frozen {html.escape(str(backbone.get('arch')))} backbone turns the "
        f"{html.escape(str(data.get('dataset', 'cifar10')))} images into features once; classifier heads "
        f"Linear → Norm → ReLU → Dropout → Linear (hidden {head.get('hidden')}, dropout "
        f"{head.get('dropout')}) that differ only in the norm — {html.escape(', '.join(label(h) for h in heads))} — "
        "are trained per experiment:</p>\n<ul>" + "".join(items) + "</ul>"
    )


def headline_table(summary_rows: list[dict]) -> str:
    """Heads × experiments (their unswept runs): final-epoch test accuracy, and λmax where it was measured."""
    base = [r for r in summary_rows if r["variant"] == "base"]
    experiments = list(dict.fromkeys(r["experiment"] for r in base))
    sharp = [
        e
        for e in experiments
        if any(math.isfinite(_num(r.get("top_eigenvalue_mean"))) for r in base if r["experiment"] == e)
    ]
    heads = sorted(dict.fromkeys(r["head"] for r in base), key=norm_sort_key)
    cells = {(r["head"], r["experiment"]): r for r in base}
    columns = [(e, "acc") for e in experiments] + [(e, "sharp") for e in sharp]
    th = "".join(f"<th>{html.escape(e)}<br>{'test acc %' if kind == 'acc' else 'λmax'}</th>" for e, kind in columns)
    trs = []
    for h in heads:
        tds = []
        for e, kind in columns:
            r = cells.get((h, e))
            if r is None:
                tds.append("<td>—</td>")
            elif kind == "acc":
                acc = _mean_std(r, "final_test_acc", 100.0, ".1f")
                diverged = r.get("diverged", "0/0").split("/")[0] not in ("", "0")
                tds.append(f"<td>{acc}{' (' + r['diverged'] + ' diverged)' if diverged else ''}</td>")
            else:
                tds.append(f"<td>{_mean_std(r, 'top_eigenvalue', 1.0, '.3g')}</td>")
        trs.append(f"<tr><td>{html.escape(label(h))}</td>{''.join(tds)}</tr>")
    seeds = sorted({r["seeds"] for r in base})
    return (
        "<p><b>Headline.</b> Test accuracy of the final epoch's weights (the best-validation checkpoint's is in the "
        "summary table) and sharpness λmax (top Hessian eigenvalue of the training loss), mean ± std over "
        f"{' / '.join(seeds)} seed(s); sweeps are in the summary table.</p>\n"
        f"<table><thead><tr><th>head</th>{th}</tr></thead><tbody>{''.join(trs)}</tbody></table>"
    )


def claim_verdict_text(rows: list[dict]) -> tuple[str, str]:
    """A claim's verdict and how its comparisons voted (n = seeds compared), e.g. ("supported", "every one of
    the 3 seeds agrees in all 6 comparisons")."""
    first = rows[0]
    verdict = first.get("claim_verdict") or first.get("verdict")
    tested = [r for r in rows if r.get("statistic")]
    n = max((int(_num(r.get("n_seeds"))) for r in tested if math.isfinite(_num(r.get("n_seeds")))), default=0)
    k = len(tested)
    votes = {v: sum(r["verdict"] == v for r in tested) for v in ("supported", "refuted", "inconclusive")}
    other = k - sum(votes.values())
    where = f"all {k} comparisons" if k > 1 else "its comparison"
    if not tested:
        detail = "the study has no runs for it"
    elif verdict == "supported":
        detail = f"every one of the {n} seeds agrees, in {where}"
    elif verdict == "refuted":
        detail = f"every one of the {n} seeds goes against it, in {where}"
    else:
        parts = [f"{votes[v]} {v}" for v in ("supported", "refuted", "inconclusive") if votes[v]]
        if other:
            parts.append(f"{other} not measurable (same value everywhere, too noisy or too few seeds)")
        detail = f"of {k} comparison{'s' if k > 1 else ''} across {n} seed{'s' if n != 1 else ''}: " + ", ".join(parts)
    return verdict, detail


def _verdict_html(rows: list[dict], brief: bool = False) -> str:
    """The verdict in bold and, unless brief (one of several measures of a claim), how its comparisons voted."""
    verdict, detail = claim_verdict_text(rows)
    css = verdict if verdict in ("supported", "refuted") else ""
    return f'<b class="{css}">{html.escape(verdict)}</b>' + ("" if brief else f" — {html.escape(detail)}")


# A claim tested by several measures has one claim id per measure, "flatter_minima[<measure>]", and the text
# "<claim> — by the <measure>": one line for the claim, one verdict per measure in it.
MEASURE_SEPARATOR = " — by the "


def claim_sentence(groups: list[list[dict]]) -> str:
    """One sentence per claim: its text and verdict with how its comparisons voted; a claim tested by several
    measures names each measure's verdict."""
    if len(groups) == 1:
        return f"<li>{html.escape(groups[0][0]['claim'])}: {_verdict_html(groups[0])}.</li>"
    claim = groups[0][0]["claim"].split(MEASURE_SEPARATOR)[0]
    parts = [
        f"by the {html.escape(rows[0]['claim'].split(MEASURE_SEPARATOR, 1)[-1])}: {_verdict_html(rows, brief=True)}"
        for rows in groups
    ]
    return f"<li>{html.escape(claim)}: " + "; ".join(parts) + ".</li>"


def claims_list(claim_rows: list[dict], alpha: float = 0.05) -> str:
    claims: dict[str, dict[str, list[dict]]] = {}
    for r in claim_rows:
        claims.setdefault(r["claim_id"].split("[")[0], {}).setdefault(r["claim_id"], []).append(r)
    n = max((int(_num(r.get("n_seeds"))) for r in claim_rows if math.isfinite(_num(r.get("n_seeds")))), default=0)
    if n < 2:
        meaning = ""
    elif 2.0**-n > alpha:  # the exact test cannot reach alpha (normscape.reporting.claims_stats)
        meaning = (
            f" With n = {n} seeds, supported means every seed agrees (smallest possible p = 2^-{n} = {2.0**-n:.3g}), "
            "not statistical significance."
        )
    elif 2 * 2.0**-n > alpha:  # only full agreement reaches alpha
        meaning = f" With n = {n} seeds, supported means every seed agrees (exact p = 2^-{n} = {2.0**-n:.3g})."
    else:
        meaning = f" With n = {n} seeds, supported means an exact sign-flip p <= {alpha:g} in the claimed direction."
    return (
        f"<p><b>Claims.</b> Each claim with its verdict (details: the claims table).{meaning}</p>\n<ul class='claims'>"
        + "".join(claim_sentence(list(groups.values())) for groups in claims.values())
        + "</ul>"
    )


def how_to_read(categories: Iterable[str]) -> str:
    missing = [c for c in categories if c not in CATEGORY_GUIDE]
    if missing:
        raise ValueError(
            f"report categories without a reading guide in normscape.reporting.landing_page.CATEGORY_GUIDE: {missing}"
        )
    items = "".join(f"<li><i>{html.escape(c)}</i>: {html.escape(CATEGORY_GUIDE[c])}</li>" for c in categories)
    return f"<p><b>How to read it.</b> The entries on the left, by category:</p>\n<ul>{items}</ul>"


def config_block(config: dict) -> str:
    plain = json.loads(json.dumps(config, default=str))  # Snakemake's config mapping types as plain dicts/lists
    text = yaml.safe_dump(plain, sort_keys=False, width=100, allow_unicode=True)
    return (
        "<details><summary><b>The configuration that produced these results</b> (YAML, schema defaults filled in)"
        f"</summary><pre>{html.escape(text)}</pre></details>"
    )


def overview_fragment(summary_csv, claims_csv, config: dict, categories: Iterable[str]) -> str:
    """The landing page's body: an HTML fragment (its own scoped style) for the report's description page."""
    return (
        f'<div class="normscape-overview">\n<style>{CSS}</style>\n'
        + "\n".join(
            [
                what_was_run(config),
                headline_table(_rows(summary_csv)),
                claims_list(_rows(claims_csv), config.get("claims", {}).get("alpha", 0.05)),
                how_to_read(categories),
                config_block(config),
            ]
        )
        + "\n</div>\n"
    )


def write_overview(summary_csv, claims_csv, config: dict, categories: Iterable[str], fragment, page) -> None:
    body = overview_fragment(summary_csv, claims_csv, config, list(categories))
    write_text(fragment, body)
    write_text(
        page,
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>normscape: the study at a glance'
        "</title>\n<style>body { font-family: system-ui, sans-serif; margin: 12px; max-width: 64rem; }</style>\n"
        f"</head>\n<body>\n{body}</body>\n</html>\n",
    )
