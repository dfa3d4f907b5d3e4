"""The report reads at a glance (issue 27), checked in a real browser and on real figures:
no horizontal overflow and no wrapped table cell in a 1,400-pixel Chromium window, a headline
table first, each long attack description stated once, Pareto points without overlapping
labels, axis ticks that do not run into each other."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from _recipe_run import recipe_run
from robustedge.report import build_report
from robustedge.report.collect import find_runs, robust_key

WIDTH = 1400
MEASURE = """<script>
// a row whose height drops when its cells may not wrap had a cell wrapped over lines
const wrapped = [];
for (const tr of document.querySelectorAll('tr')) {
  const tds = [...tr.querySelectorAll('td')];
  if (!tds.length) continue;
  const h = tr.getBoundingClientRect().height;
  tds.forEach(td => td.style.whiteSpace = 'nowrap');
  const one = tr.getBoundingClientRect().height;
  tds.forEach(td => td.style.whiteSpace = '');
  if (h > one + 1) wrapped.push(tds[0].textContent + ': ' + h + ' px vs ' + one);
}
document.title = JSON.stringify({scroll: document.documentElement.scrollWidth,
  client: document.documentElement.clientWidth, wrapped: wrapped,
  tables: document.querySelectorAll('table').length,
  first: document.querySelector('h2').textContent});
</script></body>"""


@pytest.fixture(scope="module")
def done(tmp_path_factory, tiny_run) -> Path:
    return recipe_run(tmp_path_factory, tiny_run)


@pytest.fixture(scope="module")
def report(done, tmp_path_factory):
    return build_report([done], tmp_path_factory.mktemp("glance") / "report.html")


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        pytest.skip("chromium not installed (scripts/install-system-deps.sh installs it)")
    return exe


def browse(page: Path, tmp_path: Path, *flags: str) -> subprocess.CompletedProcess:
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
    cmd += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
    cmd += [f"--user-data-dir={tmp_path / 'profile'}", f"--window-size={WIDTH},1000", *flags]
    return subprocess.run(
        [*cmd, page.resolve().as_uri()], capture_output=True, text=True, timeout=120
    )


def with_second_board(done: Path, out: Path) -> Path:
    """A copy of the runs whose local results are also filed as an emulated aarch64 board's,
    so the headline table carries two boards' columns (layout only: no figure is read)."""
    shutil.copytree(done, out)
    for res in out.rglob("device/local/results.json"):
        data = json.loads(res.read_text())
        data.update(target="qemu-aarch64", emulated=True)
        (res.parent.parent / "qemu-aarch64").mkdir()
        (res.parent.parent / "qemu-aarch64/results.json").write_text(json.dumps(data))
    return out


@pytest.mark.parametrize("boards", [1, 2])
def test_page_fits_1400_pixels_without_wrapped_cells(report, done, tmp_path, boards):
    """Layout measured by Chromium itself: the page is no wider than the window and no table
    cell wraps over lines (with one board and with two boards' columns)."""
    if boards == 2:
        runs = with_second_board(done, tmp_path / "runs")
        report = build_report([runs], tmp_path / "two.html")
        assert "qemu-aarch64 (EMULATED)" in report.html_path.read_text()
    probe = tmp_path / "probe.html"
    probe.write_text(report.html_path.read_text().replace("</body>", MEASURE))
    res = browse(probe, tmp_path, "--dump-dom")
    found = re.search(r"<title>(.*?)</title>", res.stdout, re.S)
    assert found, res.stderr[-2000:]
    m = json.loads(found.group(1).replace("&quot;", '"'))
    assert m["scroll"] <= m["client"] <= WIDTH, m
    assert m["first"] == "Headline"
    assert m["tables"] == 4  # headline, accuracy, export, device
    assert m["wrapped"] == []


def test_overflow_and_wrapping_would_be_caught(report, tmp_path):
    """The same measurement on a page with a figure too wide for the window and a cell that
    wraps (the report before issue 27 let cells wrap): both must be found."""
    probe = tmp_path / "wide.html"
    wide = "<table><tr><td>" + "9" * 400 + "</td></tr></table>"
    wraps = "<table><tr><td style='white-space:normal'>" + "12.5 (PGD-5) " * 200 + "</td></tr>"
    page = report.html_path.read_text().replace("</body>", wide + wraps + "</table>" + MEASURE)
    probe.write_text(page)
    out = browse(probe, tmp_path, "--dump-dom").stdout
    m = json.loads(re.search(r"<title>(.*?)</title>", out, re.S).group(1).replace("&quot;", '"'))
    assert m["scroll"] > WIDTH and len(m["wrapped"]) == 1, m


def test_screenshot_is_a_real_page(report, tmp_path):
    from matplotlib.image import imread

    shot = tmp_path / "shot.png"
    browse(report.html_path, tmp_path, f"--screenshot={shot}")
    img = imread(str(shot))
    assert img.shape[1] == WIDTH
    grey = img[..., :3].mean(axis=2)
    assert (grey < 0.5).mean() > 0.005 and grey.std() > 0.05  # text and figures, not blank


def test_descriptions_stated_once(report, done):
    """The board's worst-case description (attacks, budgets, images) is defined once per
    table that uses it, in a legend, not repeated in every row; no preformatted block."""
    page = report.html_path.read_text()
    assert "<pre>" not in page
    res = json.loads((done / "teacher/device/local/results.json").read_text())
    label = res["worst_case"]["label"]
    # used by every model's row in the headline and the device tables: two legend entries
    assert page.count(label) == 2, page.count(label)
    assert "<th>headline attack</th>" not in page


def test_pareto_has_a_legend_not_point_labels(done):
    """Each model named once in the figure legend; no text on the points; tick labels of every
    axis (flash in kB) do not overlap."""
    from robustedge.report import plots

    runs = find_runs([done])
    fig = plots.pareto_figure(runs, robust_key(runs))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    names = [t.get_text() for t in fig.legends[0].get_texts()]
    assert sorted(n for n in names if ":" not in n) == sorted(r.name for r in runs)
    for ax in fig.axes:
        assert not ax.texts, [t.get_text() for t in ax.texts]
        ticks = [t for t in ax.get_xticklabels() if t.get_text() and t.get_visible()]
        boxes = sorted((t.get_window_extent(renderer) for t in ticks), key=lambda b: b.x0)
        assert all(a.x1 <= b.x0 for a, b in zip(boxes, boxes[1:])), [t.get_text() for t in ticks]
    assert "flash bytes (kB)" in fig.axes[0].get_xlabel()


def test_display_units_by_hand():
    from robustedge.report.plots import display_unit

    assert display_unit("flash_bytes", [24984.0]) == ("kB", 1e-3)
    assert display_unit("p50_ms", [0.0034, 0.0054]) == ("us", 1e3)
    assert display_unit("p50_ms", [0.5, 2.0]) == ("ms", 1.0)
