"""Exports for the report and for other tools: rotatable 3D surfaces (plotly HTML), VTK files (ParaView) of every
landscape surface, and Markdown tables as standalone HTML tables (the Snakemake report shows HTML inline).

VTK files are VTK XML (ASCII), written directly: a plane of the loss landscape is a StructuredGrid (``.vts``)
whose points are (alpha, beta, loss) with the loss and accuracy as point data, like the reference
loss-landscape tool's ``.vtp`` export; the trajectory projected on the PCA plane is a PolyData polyline
(``.vtp``) with its epoch and loss per point. ParaView, VisIt and ``vtk.XMLStructuredGridReader`` read them.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Mapping
from pathlib import Path

import h5py
import numpy as np

from normscape.pipeline.atomic import write_text

# ------------------------------------------------------------------------------------------------ landscape

SURFACE_COLUMNS = 3  # 3D panels per row of a rotatable page
SURFACE_ROW_PX = 420  # height of one row of panels
# Largest PNG embedded in a preview page: base64 (x 4/3) in the page, and the page base64 again in the report's
# data: URL, must stay under Chromium's 2 MB URL limit.
PREVIEW_IMAGE_LIMIT = 1_100_000


def load_surfaces(path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """The 2D surfaces of one landscape.h5: {"plane": {alphas, betas, loss, acc}, "pca": {..., trajectory}}."""
    out = {}
    with h5py.File(path, "r") as f:
        for group in ("plane", "pca"):
            if group in f:
                out[group] = {k: np.asarray(f[group][k][()]) for k in f[group]}
    return out


def _vtk_array(name: str, values: np.ndarray, components: int = 1) -> str:
    # 17 significant digits: float64 values round-trip exactly
    flat = " ".join(f"{v:.17g}" for v in np.asarray(values, dtype=np.float64).ravel())
    return (
        f'<DataArray type="Float64" Name="{name}" NumberOfComponents="{components}" format="ascii">{flat}</DataArray>'
    )


def surface_points(alphas: np.ndarray, betas: np.ndarray, loss: np.ndarray) -> np.ndarray:
    """(N, 3) points of a surface in VTK order (the first index, alpha, varies fastest); loss[i, j] at
    (alphas[i], betas[j]). Non-finite losses (a diverged point) are written as NaN: ParaView leaves holes."""
    a, b = np.meshgrid(alphas, betas, indexing="ij")
    # VTK point order: i fastest, then j -> transpose to (j, i) before flattening
    return np.stack([a.T.ravel(), b.T.ravel(), np.asarray(loss, dtype=np.float64).T.ravel()], axis=1)


def vts_text(alphas: np.ndarray, betas: np.ndarray, fields: Mapping[str, np.ndarray], z_field: str = "loss") -> str:
    """VTK XML StructuredGrid of a surface over (alphas x betas); every field (shape (len(a), len(b))) as point data."""
    nx, ny = len(alphas), len(betas)
    extent = f"0 {nx - 1} 0 {ny - 1} 0 0"
    points = surface_points(alphas, betas, fields[z_field])
    data = "".join(_vtk_array(name, np.asarray(v, dtype=np.float64).T) for name, v in fields.items())
    return (
        '<?xml version="1.0"?>\n'
        '<VTKFile type="StructuredGrid" version="0.1" byte_order="LittleEndian">\n'
        f'<StructuredGrid WholeExtent="{extent}">\n<Piece Extent="{extent}">\n'
        f'<PointData Scalars="{z_field}">{data}</PointData>\n'
        f"<Points>{_vtk_array('Points', points, 3)}</Points>\n"
        "</Piece>\n</StructuredGrid>\n</VTKFile>\n"
    )


def vtp_polyline_text(points: np.ndarray, fields: Mapping[str, np.ndarray]) -> str:
    """VTK XML PolyData: one polyline through ``points`` (N, 3), with per-point ``fields``."""
    n = len(points)
    data = "".join(_vtk_array(name, v) for name, v in fields.items())
    connectivity = " ".join(str(i) for i in range(n))
    return (
        '<?xml version="1.0"?>\n'
        '<VTKFile type="PolyData" version="0.1" byte_order="LittleEndian">\n<PolyData>\n'
        f'<Piece NumberOfPoints="{n}" NumberOfVerts="0" NumberOfLines="{1 if n else 0}" NumberOfStrips="0" '
        'NumberOfPolys="0">\n'
        f"<PointData>{data}</PointData>\n"
        f"<Points>{_vtk_array('Points', points, 3)}</Points>\n"
        '<Lines><DataArray type="Int64" Name="connectivity" format="ascii">'
        f'{connectivity}</DataArray><DataArray type="Int64" Name="offsets" format="ascii">{n if n else ""}'
        "</DataArray></Lines>\n</Piece>\n</PolyData>\n</VTKFile>\n"
    )


def write_landscape_vtk(
    landscape_h5: str | Path, plane_vts: str | Path, pca_vts: str | Path, trajectory_vtp: str | Path
):
    """Every surface of one landscape.h5 as VTK: the random-direction plane, the PCA plane, and the trajectory.

    The trajectory's loss per epoch is read off the PCA surface at the nearest grid point (the surface is
    evaluated on that plane; the trajectory points lie on it only up to the PCA residual).
    """
    s = load_surfaces(landscape_h5)
    if "plane" not in s:  # a diverged run's record has no surfaces: one NaN point each, so readers still open them
        nan = {"loss": np.full((1, 1), np.nan), "acc": np.full((1, 1), np.nan)}
        for path in (plane_vts, pca_vts):
            write_text(path, vts_text(np.zeros(1), np.zeros(1), nan))
        write_text(
            trajectory_vtp, vtp_polyline_text(np.zeros((1, 3)), {"epoch": np.zeros(1), "loss": np.full(1, np.nan)})
        )
        return
    p = s["plane"]
    write_text(plane_vts, vts_text(p["alphas"], p["betas"], {"loss": p["loss"], "acc": p["acc"]}))
    q = s["pca"]
    write_text(pca_vts, vts_text(q["alphas"], q["betas"], {"loss": q["loss"], "acc": q["acc"]}))
    traj = np.asarray(q["trajectory"], dtype=np.float64)
    i = np.abs(q["alphas"][None, :] - traj[:, :1]).argmin(1)
    j = np.abs(q["betas"][None, :] - traj[:, 1:2]).argmin(1)
    loss = q["loss"][i, j].astype(np.float64)
    points = np.stack([traj[:, 0], traj[:, 1], loss], axis=1)
    write_text(trajectory_vtp, vtp_polyline_text(points, {"epoch": np.arange(len(traj)), "loss": loss}))


def surfaces_html(surfaces: Mapping[str, Mapping[str, np.ndarray]], title: str, path: str | Path) -> None:
    """One self-contained HTML file (plotly.js inlined, works offline) with one rotatable 3D surface per entry
    (``{label: {alphas, betas, loss}}``), all on one shared z range and colour scale, as wide as the window."""
    fig = surfaces_figure(surfaces, title)
    rows = -(-len(surfaces) // SURFACE_COLUMNS)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(
        str(path),
        include_plotlyjs=True,
        full_html=True,
        config={"displaylogo": False, "responsive": True},
        default_width="100%",
        default_height=f"{60 + SURFACE_ROW_PX * rows}px",
    )


def surfaces_figure(surfaces: Mapping[str, Mapping[str, np.ndarray]], title: str):
    """The plotly figure of :func:`surfaces_html`."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    labels = list(surfaces)
    finite = [np.asarray(s["loss"])[np.isfinite(s["loss"])] for s in surfaces.values()]
    zmax = max((float(f.max()) for f in finite if f.size), default=1.0)
    # a grid at most SURFACE_COLUMNS wide, sized to the window (not a fixed pixel width): every head fits in the
    # report's frame
    cols = min(len(labels), SURFACE_COLUMNS)
    rows = -(-len(labels) // cols)
    specs = [[{"type": "scene"}] * cols for _ in range(rows)]
    fig = make_subplots(rows=rows, cols=cols, specs=specs, subplot_titles=labels, vertical_spacing=0.06)
    for k, label in enumerate(labels, 1):
        s = surfaces[label]
        # plotly's z[row][col] sits at (x[col], y[row]): loss[i, j] is at (alphas[i], betas[j]) -> transpose
        fig.add_trace(
            go.Surface(
                x=s["alphas"],
                y=s["betas"],
                z=np.asarray(s["loss"]).T,
                cmin=0,
                cmax=zmax,
                colorscale="Viridis",
                showscale=k == len(labels),
                name=label,
                hovertemplate="α %{x:.3f}<br>β %{y:.3f}<br>loss %{z:.4f}<extra>" + label + "</extra>",
            ),
            row=(k - 1) // cols + 1,
            col=(k - 1) % cols + 1,
        )
        scene = "scene" if k == 1 else f"scene{k}"
        fig.layout[scene].update(
            xaxis_title="α (d1)",
            yaxis_title="β (d2)",
            zaxis_title="loss",
            zaxis_range=[0, zmax],
            aspectmode="manual",
            aspectratio=dict(x=1, y=1, z=0.7),
            camera=dict(eye=dict(x=1.9, y=1.9, z=1.2)),  # the whole box in view, in a third of the window
        )
    fig.update_layout(title=title, autosize=True, margin=dict(l=0, r=0, t=60, b=0))
    return fig


def preview_html(png: str | Path, interactive_name: str, title: str) -> str:
    """A small HTML page for a single-file report: the figure's static image and where its rotatable version is.

    A single report.html embeds every file as a data: URL, and Chromium does not open one over 2 MB (plotly.js
    alone is larger), so the rotatable page would be a blank pane there. The image is embedded only while the
    page stays under that limit (it is base64-encoded twice on the way into the report).
    """
    data = Path(png).read_bytes()
    image = (
        f'<img alt="{html.escape(title)}" style="max-width:100%" src="data:image/png;base64,'
        f'{base64.b64encode(data).decode()}">'
        if len(data) < PREVIEW_IMAGE_LIMIT
        else f"<p>(The static image is the entry <code>{html.escape(Path(png).name)}</code> of this report.)</p>"
    )
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
        f"<style>{TABLE_CSS}</style>\n</head>\n<body>\n"
        "<p><b>Static image.</b> The rotatable 3D version cannot be shown in a single-file report (browsers do "
        "not open embedded pages over 2 MB). Rotatable: the zip report "
        "(<code>snakemake --report report.zip</code>, unzip, open report/report.html) or the file "
        f"<code>results/figures/{html.escape(interactive_name)}</code> opened directly (works offline).</p>\n"
        f"{image}\n</body>\n</html>\n"
    )


def write_landscape_surfaces_html(
    landscapes: list[str], path: str | Path, title: str, preview: str | Path | None = None, png: str | Path = ""
) -> None:
    """The random-direction plane of each head (lowest seed), as in fig5_landscape_surface, rotatable."""
    from normscape.models.norms import NORM_LABELS
    from normscape.reporting.run_files import norm_sort_key, run_key

    chosen: dict[str, str] = {}
    for p in sorted(landscapes, key=lambda p: run_key(p)["seed"]):
        chosen.setdefault(run_key(p)["head"], p)
    surfaces = {}
    for head, p in sorted(chosen.items(), key=lambda kv: norm_sort_key(kv[0])):
        plane = load_surfaces(p).get("plane")
        if plane is None:  # a diverged run has no surface: an empty panel that says so
            nan = np.full((1, 1), np.nan)
            surfaces[f"{NORM_LABELS.get(head, head)} (diverged)"] = {"alphas": [0.0], "betas": [0.0], "loss": nan}
        else:
            surfaces[NORM_LABELS.get(head, head)] = plane
    surfaces_html(surfaces, title, path)
    if preview is not None:
        write_text(preview, preview_html(png, Path(path).name, title))


# ------------------------------------------------------------------------------------------------ tables

_PIPE_ROW = re.compile(r"^\s*\|(.*)\|\s*$")
_SEPARATOR = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")

# Long text cells wrap (a fixed maximum width) so the last column, the verdict of a claims row, stays on screen
# beside the report's menu at 1366 px; numbers stay on one line.
TABLE_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; font-size: 13px; margin: 12px; }
table { border-collapse: collapse; margin-bottom: 6px; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; white-space: nowrap; vertical-align: top; }
th { background: #f0f0f0; position: sticky; top: 0; white-space: normal; max-width: 9em; text-align: left; }
td.text { text-align: left; white-space: normal; min-width: 6em; max-width: 22em; overflow-wrap: break-word; }
tr:nth-child(even) td { background: #fafafa; }
h1 { font-size: 18px; } h2 { font-size: 16px; } h3 { font-size: 14px; margin: 18px 0 6px; }
p { max-width: 70em; color: #333; }
.verdict-supported { color: #1a7f37; } .verdict-refuted { color: #b42318; }
"""
_NUMERIC = re.compile(r"^[-+−—<>≈≠=\s\d.,:%±()*/e\[\]]*$|^\d+/\d+$")


def inline_html(text: str) -> str:
    """HTML of one line of Markdown inline text: escaped, with **bold** and `code` rendered (never shown raw)."""
    out = html.escape(text, quote=False)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", out)


def _cells(line: str) -> list[str]:
    """Cells of a pipe-table row; ``\\|`` is a literal pipe inside a cell (GitHub Markdown)."""
    inner = _PIPE_ROW.match(line).group(1)
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", inner)]


def _td(cell: str) -> str:
    # text cells wrap and align left; numeric cells (numbers, ranges, fractions, "—") stay on one line
    css = "" if _NUMERIC.match(cell) else ' class="text"'
    verdict = cell.strip("* ").split(" ")[0]
    if verdict in ("supported", "refuted"):
        css = f' class="text verdict-{verdict}"'
    return f"<td{css}>{inline_html(cell)}</td>"


def markdown_tables_to_html(markdown: str, title: str) -> str:
    """A standalone HTML page of a Markdown document made of headings, pipe tables and paragraphs (our tables).

    Pipe tables become <table>s (first row: header), ``#`` lines headings, other non-empty blocks paragraphs;
    inline ``**bold**`` and ```code``` are rendered, everything else HTML-escaped: no Markdown syntax is left
    for the reader to decode, and unknown Markdown stays literal text, never dropped.
    """
    body: list[str] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        if _PIPE_ROW.match(lines[i]) and i + 1 < len(lines) and _SEPARATOR.match(lines[i + 1]):
            head = _cells(lines[i])
            i += 2
            rows = []
            while i < len(lines) and _PIPE_ROW.match(lines[i]):
                rows.append(_cells(lines[i]))
                i += 1
            th = "".join(f"<th>{inline_html(c)}</th>" for c in head)
            trs = "".join("<tr>" + "".join(_td(c) for c in r) + "</tr>\n" for r in rows)
            body.append(f"<table>\n<thead><tr>{th}</tr></thead>\n<tbody>\n{trs}</tbody>\n</table>")
            continue
        heading = _HEADING.match(lines[i])
        if heading:
            level = len(heading.group(1))
            body.append(f"<h{level}>{inline_html(heading.group(2))}</h{level}>")
            i += 1
            continue
        block = []
        while i < len(lines) and lines[i].strip() and not _PIPE_ROW.match(lines[i]) and not _HEADING.match(lines[i]):
            block.append(lines[i].strip())
            i += 1
        if block:
            body.append(f"<p>{inline_html(' '.join(block))}</p>")
        else:
            i += 1
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
        f"<style>{TABLE_CSS}</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )


def write_table_html(markdown_path: str | Path, html_path: str | Path, title: str) -> None:
    write_text(html_path, markdown_tables_to_html(Path(markdown_path).read_text(), title))
