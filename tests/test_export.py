"""Exports: VTK XML of landscape surfaces (parsed back point by point), interactive plotly HTML, tables as HTML."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import h5py
import numpy as np

from normscape.reporting.export import (
    markdown_tables_to_html,
    surfaces_html,
    write_landscape_vtk,
)


def fake_landscape(path, nx=4, ny=3):
    alphas, betas = np.linspace(-1, 1, nx), np.linspace(-0.5, 0.5, ny)
    loss = (alphas[:, None] ** 2 + 3 * betas[None, :] ** 2) + 0.1  # loss[i, j] at (alphas[i], betas[j])
    loss[0, 0] = np.nan  # a diverged grid point stays a hole
    with h5py.File(path, "w") as f:
        for group in ("plane", "pca"):
            g = f.create_group(group)
            g["alphas"], g["betas"], g["loss"], g["acc"] = alphas, betas, loss, 1 - loss / 10
        f["pca/trajectory"] = np.array([[-1.0, -0.5], [0.1, 0.0], [0.9, 0.4]])
        f["pca/explained_variance_ratio"] = np.array([0.9, 0.1])
    return alphas, betas, loss


def arrays(root, tag):
    return {
        a.get("Name"): np.array([float(v) for v in a.text.split()]) if a.text else np.zeros(0)
        for a in root.iter("DataArray")
        if tag is None or a in list(root.iter(tag))[0].iter("DataArray")
    }


def test_vtk_structured_grid_points_and_values(tmp_path):
    alphas, betas, loss = fake_landscape(tmp_path / "l.h5")
    out = [tmp_path / "plane.vts", tmp_path / "pca.vts", tmp_path / "traj.vtp"]
    write_landscape_vtk(tmp_path / "l.h5", *out)
    root = ET.parse(out[0]).getroot()
    assert root.get("type") == "StructuredGrid"
    assert root.find("StructuredGrid").get("WholeExtent") == "0 3 0 2 0 0"
    points = arrays(root, "Points")["Points"].reshape(-1, 3)
    values = arrays(root, "PointData")
    assert points.shape == (12, 3)
    # VTK order: the first index (alpha) varies fastest
    for j in range(3):
        for i in range(4):
            k = i + 4 * j
            np.testing.assert_allclose(points[k, :2], [alphas[i], betas[j]])
            np.testing.assert_equal(points[k, 2], loss[i, j])
            np.testing.assert_equal(values["loss"][k], loss[i, j])
    np.testing.assert_allclose(values["acc"][1:], (1 - loss / 10).T.ravel()[1:])
    traj = ET.parse(out[2]).getroot()
    piece = traj.find("PolyData/Piece")
    assert piece.get("NumberOfPoints") == "3" and piece.get("NumberOfLines") == "1"
    pts = arrays(traj, "Points")["Points"].reshape(-1, 3)
    # the loss of each trajectory point is the surface's value at the nearest grid point
    np.testing.assert_allclose(pts[1], [0.1, 0.0, loss[np.abs(alphas - 0.1).argmin(), 1]])
    np.testing.assert_array_equal(arrays(traj, "Lines")["connectivity"], [0, 1, 2])


def test_interactive_html_is_self_contained(tmp_path):
    alphas, betas, loss = fake_landscape(tmp_path / "l.h5")
    out = tmp_path / "s.html"
    surfaces_html(
        {"A": {"alphas": alphas, "betas": betas, "loss": loss}, "B": {"alphas": alphas, "betas": betas, "loss": loss}},
        "title",
        out,
    )
    html = out.read_text()
    head = html.split("<body>")[0]
    assert "<script src=" not in html and "cdn" not in head  # plotly.js inlined: works offline
    assert html.count('"type":"surface"') == 3  # two traces + plotly's default template entry
    assert "scene2" in html


def test_interactive_html_fits_every_head_in_the_window(tmp_path):
    """Five heads: a grid of at most three per row, sized to the window (no fixed pixel width to overflow)."""
    from normscape.reporting.export import surfaces_figure

    alphas, betas, loss = fake_landscape(tmp_path / "l.h5")
    surfaces = {k: {"alphas": alphas, "betas": betas, "loss": loss} for k in "ABCDE"}
    out = tmp_path / "s.html"
    surfaces_html(surfaces, "t", out)
    assert 'style="height:900px; width:100%;"' in out.read_text()  # two rows of 420 px, the window's width
    layout = surfaces_figure(surfaces, "t").layout
    assert layout.width is None and layout.autosize
    domains = [layout[f"scene{k}" if k > 1 else "scene"].domain for k in range(1, 6)]
    assert len({tuple(d.x) for d in domains}) == 3 and len({tuple(d.y) for d in domains}) == 2
    assert all(0 <= d.x[0] < d.x[1] <= 1 for d in domains)


def test_preview_page_embeds_the_static_image_below_the_data_url_limit(tmp_path):
    from normscape.reporting.export import PREVIEW_IMAGE_LIMIT, preview_html

    png = tmp_path / "f.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(1000))
    page = preview_html(png, "f.html", "T")
    assert "data:image/png;base64,iVBORw0KGgo" in page and "results/figures/f.html" in page
    # twice base64-encoded on the way into a single-file report: it stays under Chromium's 2 MB
    assert (PREVIEW_IMAGE_LIMIT * 4 / 3 + 2000) * 4 / 3 < 2 * 1024 * 1024
    png.write_bytes(bytes(PREVIEW_IMAGE_LIMIT + 1))
    assert "base64" not in preview_html(png, "f.html", "T")  # too large: it names the PNG entry instead


def test_markdown_table_to_html_keeps_escaped_pipes_and_notes():
    md = "| a | \\|g\\| median | c |\n|---|---|---|\n| x | 1.0 ± 0.1 | <b> |\n| y | 2 | 3 |\n\nMean ± std. |g|: norm.\n"
    html = markdown_tables_to_html(md, "T")
    assert "<th>|g| median</th>" in html
    assert html.count("<tr>") == 3 and html.count("<td") == 6
    assert '<td class="text">&lt;b&gt;</td>' in html  # escaped; text wraps, numbers do not
    assert "<td>1.0 ± 0.1</td>" in html
    assert "<p>Mean ± std. |g|: norm.</p>" in html


def test_markdown_headings_and_emphasis_are_rendered_not_shown_raw():
    md = "# Claims\n\n### A claim — **mixed**\n\n| verdict | x |\n|---|---|\n| **supported** | `a*b` |\n"
    html = markdown_tables_to_html(md, "T")
    assert "<h1>Claims</h1>" in html and "<h3>A claim — <strong>mixed</strong></h3>" in html
    assert '<td class="text verdict-supported"><strong>supported</strong></td>' in html
    assert "<code>a*b</code>" in html and "**" not in html and "#" not in html.split("<body>")[1]
