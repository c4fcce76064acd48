"""The scan dashboard in a real headless Chromium (Debian's `chromium`): the charts draw pixels and the table's
rows and filters work in the browser. Marked `browser`; skipped when no Chromium is installed (`.ci/run`
installs it when it runs as root with apt-get)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from auditor.render.scan_html import COLORS, write_scan_html
from tests._png import count_non_background, read_png

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install -y chromium)"),
]


def _hex(c: str) -> tuple[int, int, int]:
    return int(c[1:3], 16), int(c[3:5], 16), int(c[5:7], 16)


def _exact(rows: list[bytearray], ch: int, box: tuple[int, int, int, int], rgb: tuple[int, int, int]) -> int:
    x0, y0, x1, y1 = box
    return sum(1 for y in range(y0, y1) for x in range(x0, x1) if tuple(rows[y][x * ch : x * ch + 3]) == rgb)


def _lines() -> list[dict]:
    out = []
    verdicts = ["FAIL", "WARN", "PASS", "PASS", "SKIP"]
    for i in range(40):
        v = verdicts[i % len(verdicts)]
        out.append(
            {
                "pr": 1000 + i,
                "folder": f"records/track_10min_16mb/2026-04-{1 + i % 28:02d}_R{i}" if v != "SKIP" else "",
                "overall": v,
                "fail_rules": ["PG201", "PG301"][: 1 + i % 2] if v == "FAIL" else [],
                "warn_rules": ["PG621"] if v == "WARN" else [],
                "seconds": 0.05 * (1 + i % 9) ** 2,
                "date": f"2026-{3 + i % 2:02d}-{1 + i % 28:02d}T12:00:00+00:00",
                "reused": i % 7 == 6,
                "error": "",
                "note": "changes no record folder" if v == "SKIP" else "",
            }
        )
    return out


def _chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",  # root on CI machines
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={tmp / 'profile'}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _screenshot(tmp: Path, page: Path, name: str) -> tuple[int, int, int, list[bytearray]]:
    png = tmp / f"{name}.png"
    proc = _chromium(tmp, "--window-size=1400,1000", f"--screenshot={png}", page.as_uri())
    assert png.is_file(), proc.stderr[-2000:]
    return read_png(png.read_bytes())


def test_dashboard_screenshot_has_charts(tmp_path: Path) -> None:
    full, empty = tmp_path / "full.html", tmp_path / "empty.html"
    write_scan_html(_lines(), full)
    write_scan_html([], empty)
    w, h, ch, rows = _screenshot(tmp_path, full, "full")
    _, _, ch0, rows0 = _screenshot(tmp_path, empty, "empty")
    assert (w, h) == (1400, 1000)
    chart_area = (0, 60, w, 700)  # the charts sit above the filters and the table
    n, colours = count_non_background(rows, ch, chart_area)
    n0, _ = count_non_background(rows0, ch0, chart_area)
    assert n > 20_000 and n > 2 * n0  # the charts drew something, and far more than the empty page's frames
    # the bars are drawn in the verdict colours and the histogram in blue: solid fills of exact colours, which
    # the empty page (text only) has almost none of
    red, blue = _hex(COLORS["FAIL"]), (9, 105, 218)
    assert _exact(rows, ch, chart_area, red) > 500 and _exact(rows, ch, chart_area, blue) > 2_000
    assert _exact(rows0, ch0, chart_area, red) < 100 and _exact(rows0, ch0, chart_area, blue) < 100
    assert len(colours) > 20


def test_dashboard_rows_and_filters_in_the_browser(tmp_path: Path) -> None:
    page = tmp_path / "scan.html"
    lines = _lines()
    write_scan_html(lines, page)
    dom = _chromium(tmp_path, "--dump-dom", page.as_uri()).stdout
    rows = re.findall(r'<tr class="row"[^>]*>', dom)
    assert len(rows) == len(lines)
    assert dom.count('href="https://github.com/openai/parameter-golf/pull/') == len(lines)
    assert "40 shown" in dom
    # the filters run in the browser: a linked view (#verdict=FAIL&rule=PG301) hides every other row
    want = sum(1 for x in lines if x["overall"] == "FAIL" and "PG301" in x["fail_rules"])
    dom = _chromium(tmp_path, "--dump-dom", page.as_uri() + "#verdict=FAIL&rule=PG301").stdout
    rows = re.findall(r'<tr class="row"[^>]*>', dom)
    hidden = [r for r in rows if "display: none" in r]
    assert len(rows) == len(lines) and len(rows) - len(hidden) == want > 0
    assert f"{want} shown" in dom
    # a date range keeps only the rows dated inside it
    in_march = sum(1 for x in lines if x["date"].startswith("2026-03"))
    dom = _chromium(tmp_path, "--dump-dom", page.as_uri() + "#from=2026-03-01&to=2026-03-31").stdout
    assert f"{in_march} shown" in dom
