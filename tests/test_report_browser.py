"""The report page in a real headless browser (Debian's chromium): every image decodes, no
console errors, no script from the store runs; a screenshot goes to test-artifacts/.

Chromium is driven from the command line: ``--dump-dom`` of a copy of the page with a probe
script injected at the top of <head> (it records resource and script errors, console.error /
console.warn calls and, on ``load``, each image's natural size into a <pre>), and
``--enable-logging=stderr`` to catch console messages the probe could miss.
"""

from __future__ import annotations

import html as html_lib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from report_fixtures import full_report

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))
                 if p), None)
INSTALL = "Debian: apt-get update && apt-get install -y chromium; .ci/run installs it"
#: in CI (CI=true) a missing browser is a failure, not a skip: CI can install it
IN_CI = os.environ.get("CI", "").lower() == "true"
pytestmark = pytest.mark.skipif(CHROMIUM is None and not IN_CI,
                                reason=f"chromium is not installed ({INSTALL})")


@pytest.fixture(autouse=True)
def _browser_installed():
    if CHROMIUM is None:
        pytest.fail(f"CI=true but chromium is not installed ({INSTALL})")

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
N_FIGURES = 10

PROBE = """<script>
(function () {
  var errors = [];
  window.addEventListener("error", function (e) {
    var t = e.target;
    if (t && t !== window && t.tagName) {
      errors.push("failed to load " + t.tagName + " " + (t.currentSrc || t.src || t.href));
    } else {
      errors.push("error: " + e.message);
    }
  }, true);
  window.addEventListener("unhandledrejection", function (e) {
    errors.push("unhandled rejection: " + e.reason);
  });
  ["error", "warn"].forEach(function (k) {
    var f = console[k];
    console[k] = function () {
      errors.push("console." + k + ": " + Array.prototype.join.call(arguments, " "));
      return f.apply(console, arguments);
    };
  });
  window.addEventListener("load", function () {
    var imgs = Array.prototype.map.call(document.images, function (im) {
      return {src: im.getAttribute("src"), complete: im.complete,
              width: im.naturalWidth, height: im.naturalHeight};
    });
    var pre = document.createElement("pre");
    pre.id = "probe-result";
    pre.textContent = JSON.stringify({
      images: imgs, errors: errors, scripts: document.scripts.length,
      scroll_width: document.documentElement.scrollWidth,
      client_width: document.documentElement.clientWidth,
      pwned: window.__pwned === undefined ? null : String(window.__pwned)});
    document.body.appendChild(pre);
  });
})();
</script>"""


def chromium(args: list[str], profile: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--disable-dev-shm-usage", "--hide-scrollbars",
           f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"chromium failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return proc


def console_messages(stderr: str) -> list[str]:
    """Console lines chromium logs with --enable-logging: ``...:CONSOLE:12] "msg", source: ...``."""
    return re.findall(r":CONSOLE[:\d(]*[^\]]*\]\s*(.*)", stderr)


def probe(folder: Path, profile: Path, width: int = 1400) -> tuple[dict, list[str]]:
    """Load ``folder/index.html`` with the probe injected in a window ``width`` px wide; the
    probe's result and console lines."""
    page = (folder / "index.html").read_text(encoding="utf-8")
    assert page.count("<head>") == 1
    probe_page = folder / "probe.html"  # next to index.html: the figures' relative paths hold
    probe_page.write_text(page.replace("<head>", "<head>\n" + PROBE, 1), encoding="utf-8")
    proc = chromium([f"--window-size={width},2000", "--virtual-time-budget=10000", "--dump-dom",
                     probe_page.as_uri()], profile)
    m = re.search(r'<pre id="probe-result">(.*?)</pre>', proc.stdout, re.S)
    assert m, "the probe wrote no result: the page did not load or its script did not run\n" \
        + proc.stderr[-2000:]
    return json.loads(html_lib.unescape(m.group(1))), console_messages(proc.stderr)


def test_console_lines_are_recognised():
    stderr = ('[1:1:1127/230954.505019:INFO:CONSOLE:1] "boom", source: file:///x.html (1)\n'
              "[1:1:1127/230954.50:ERROR:dbus/bus.cc:405] Failed to connect to the bus\n"
              '[2:2:0101/000000.1:INFO:CONSOLE(7)] "Uncaught ReferenceError: f", source: x (7)')
    assert console_messages(stderr) == ['"boom", source: file:///x.html (1)',
                                        '"Uncaught ReferenceError: f", source: x (7)']


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    return full_report(tmp_path_factory).parent


def test_every_image_decodes_without_console_errors(report_dir, tmp_path):
    result, console = probe(report_dir, tmp_path / "profile")
    assert len(result["images"]) == N_FIGURES
    for im in result["images"]:
        assert im["complete"] and im["width"] > 0 and im["height"] > 0, im
    assert result["errors"] == []
    assert console == []
    # the <script> in a solver parameter and the onerror in a message stayed text
    assert result["pwned"] is None
    assert result["scripts"] == 1  # the probe's own


def test_the_probe_sees_a_missing_image(report_dir, tmp_path):
    """Negative control: the check above can fail."""
    broken = tmp_path / "broken"
    shutil.copytree(report_dir, broken, ignore=shutil.ignore_patterns("probe.html"))
    (broken / "figures" / "time_vs_d.png").unlink()
    result, _ = probe(broken, tmp_path / "profile")
    bad = [im for im in result["images"] if im["width"] == 0]
    assert [im["src"] for im in bad] == ["figures/time_vs_d.png"]
    assert any("time_vs_d.png" in e for e in result["errors"])


def test_no_horizontal_overflow_at_1280_px(report_dir, tmp_path):
    """The page fits a 1280 px window (issue 24: it was 1878 px wide in a 1400 px one)."""
    result, _ = probe(report_dir, tmp_path / "profile", width=1280)
    assert result["client_width"] <= 1280
    assert result["scroll_width"] <= result["client_width"], result["scroll_width"]


def test_the_probe_sees_an_overflow(report_dir, tmp_path):
    """Negative control: a table cell that does not wrap makes the page wider than the window."""
    wide = tmp_path / "wide"
    shutil.copytree(report_dir, wide, ignore=shutil.ignore_patterns("probe.html"))
    page = (wide / "index.html").read_text(encoding="utf-8")
    (wide / "index.html").write_text(page.replace(
        "</body>", '<table><tr><td style="white-space:nowrap">' + "x" * 400
        + "</td></tr></table></body>", 1), encoding="utf-8")
    result, _ = probe(wide, tmp_path / "profile", width=1280)
    assert result["scroll_width"] > result["client_width"]


def test_screenshot(report_dir, tmp_path):
    import matplotlib.image as mpimg
    import numpy as np

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    proc = chromium(["--window-size=1400,3000", "--virtual-time-budget=10000",
                     f"--screenshot={shot}", (report_dir / "index.html").as_uri()],
                    tmp_path / "profile")
    assert console_messages(proc.stderr) == []
    img = mpimg.imread(shot)
    assert img.shape[:2] == (3000, 1400)
    assert float(np.std(img[..., :3])) > 0.05, "the screenshot looks blank"
    shutil.copytree(report_dir, ARTIFACTS / "report", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("probe.html"))
