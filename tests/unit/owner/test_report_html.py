"""``baton report --out DIR``: a self-contained HTML page, its JSON and PNG plots."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image, ImageStat

from baton.errors import ConfigError
from owner.report import build_report
from owner.report_html import render_html, write_report_dir
from tests.unit.owner.test_report import _events, _run

BROWSER = "chromium-headless-shell"
"""The Debian package (and binary) the screenshot test drives; `make test` installs it."""
WHY_MISSING = Path(".venv/browser-missing.txt")
"""Where `make test` notes why it could not install the browser."""


def assert_not_blank(png: bytes | Path) -> None:
    """Fails unless ``png`` is a valid PNG with real content (not one flat colour)."""
    import io

    with Image.open(io.BytesIO(png) if isinstance(png, bytes) else png) as img:
        assert img.format == "PNG"
        img.verify()
    with Image.open(io.BytesIO(png) if isinstance(png, bytes) else png) as img:
        grey = img.convert("L")
        lo, hi = grey.getextrema()
        assert isinstance(lo, int)
        assert isinstance(hi, int)
        assert hi - lo > 100, "the image is (nearly) one colour"
        assert ImageStat.Stat(grey).stddev[0] > 5, "the image is almost blank"


def test_report_dir_holds_html_json_and_plots(tmp_path: Path) -> None:
    rep = build_report(_run(), _events())
    written = write_report_dir(rep, tmp_path / "new" / "out")
    out = tmp_path / "new" / "out"
    assert sorted(p.name for p in written) == sorted(
        ["report.json", "metric.png", "order.png", "timing.png", "final.png", "report.html"]
    )
    assert json.loads((out / "report.json").read_text()) == json.loads(json.dumps(rep))
    for png in out.glob("*.png"):
        assert_not_blank(png)
    page = (out / "report.html").read_text()
    assert '<td class="l">hop 1</td><td class="">1</td><td class="l">a</td>' in page
    assert '<td class="l">hop 2</td><td class="">1</td><td class="l">b</td>' in page
    assert "(higher is better)" in page
    for external in ('href="', "<script", "<link", 'src="http'):
        assert external not in page
    embedded = re.findall(r'<img id="plot-(\w+)" [^>]*src="data:image/png;base64,([^"]+)"', page)
    assert [name for name, _ in embedded] == ["metric", "order", "timing", "final"]
    for name, data in embedded:
        assert base64.b64decode(data) == (out / f"{name}.png").read_bytes()


def test_report_html_escapes_what_sites_report() -> None:
    run = _run()
    run.hops[1].error = "<script>alert(1)</script>"
    page = render_html(build_report(run, _events()), {})
    assert "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_report_dir_that_cannot_be_written_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match=f"cannot write the report into {blocker / 'sub'}"):
        write_report_dir(build_report(_run(), _events()), blocker / "sub")


def test_report_page_screenshot_in_headless_chromium_is_not_blank(tmp_path: Path) -> None:
    browser = shutil.which(BROWSER)
    if browser is None:
        why = WHY_MISSING.read_text().strip() if WHY_MISSING.is_file() else "not installed"
        pytest.skip(f"{BROWSER} is not on PATH ({why}): install the Debian package `{BROWSER}`")
    write_report_dir(build_report(_run(), _events()), tmp_path)
    shot = tmp_path / "shot.png"
    done = subprocess.run(
        [browser, "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--screenshot={shot}", "--window-size=1000,1400",
         (tmp_path / "report.html").as_uri()],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert_not_blank(shot)
    with Image.open(shot) as img:
        assert img.size == (1000, 1400)
