"""report.html of a real small run, opened in Debian's headless chromium through selenium.

It checks what a reader sees: every image decoded (naturalWidth > 0), every table laid out with
rows, no console error, and a headline that names the best system by KL (worked out here from
metrics.csv). A full-page screenshot is saved beside the report (``report.png``).

Needs ``chromium`` and ``chromium-driver`` (apt-get; ``.ci/run`` installs them) and selenium
(``make setup``). Skips only when the browser or its driver is not installed.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from surveysim_core.config import RunConfig
from surveysim_core.protocols import Progress
from surveysim_core.run import execute

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver") or (
    "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None
)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """A baseline-only EV-shift run: 160 synthetic subjects, random and marginal baselines."""
    from surveysim_core.plugins import Plugins

    out = tmp_path_factory.mktemp("browser")
    config = RunConfig.model_validate(
        {
            "survey": "evshift",
            "data": {"source": "synthetic", "subjects": 160, "seed": 0},
            "split": {"train": 0.6, "val": 0.1, "test": 0.3, "seed": 0},
            "evaluation": {"segments": ["political", "age"], "bootstrap": 50},
            "baselines": [{"name": "random"}, {"name": "marginal"}],
            "output": {"dir": str(out)},
        }
    )
    return execute(
        config,
        "browser.yaml",
        Plugins(),
        run_dir=str(out / "run"),
        progress=Progress(lambda m: None),
    )


def _driver():
    if not (CHROMIUM and DRIVER):
        pytest.skip("chromium and chromium-driver are not installed (apt-get; .ci/run does it)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium: make setup")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000", "--allow-file-access-from-files"):  # fmt: skip
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # an explicit driver path: selenium-manager must not try to download one
    return webdriver.Chrome(options=options, service=Service(executable_path=DRIVER))


def test_report_renders_in_chromium(small_run):
    report = small_run.dir / "report.html"
    assert report.exists()
    metrics = pd.read_csv(small_run.dir / "metrics.csv", keep_default_na=False, na_values=[""])
    overall = metrics[(metrics["segment"] == "all") & ~metrics["system"].str.startswith("floor:")]
    kl = overall[(overall["metric"] == "kl") & (overall["question"] == "initial_preference")]
    best = kl.loc[kl["value"].idxmin()]
    driver = _driver()
    try:
        driver.get(report.resolve().as_uri())
        assert driver.execute_script("return document.readyState") == "complete"
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])"
        )
        # two answer histograms, the intervention plot, and the sklearn plugin's picture if any
        assert len(images) >= 3, images
        broken = [alt for alt, complete, width in images if not complete or width <= 0]
        assert not broken, f"images that did not render: {broken}"
        tables = driver.execute_script(
            "return Array.from(document.querySelectorAll('table')).map("
            "t => [t.rows.length, t.getBoundingClientRect().height])"
        )
        # per question: a headline table and a segment table; one intervention table
        assert len(tables) >= 5, tables
        assert all(rows > 1 and height > 0 for rows, height in tables), tables
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
        headline = driver.execute_script(
            "return document.querySelector('.headline b.best').textContent"
        )
        # one setting each, no temperature: the page names the system alone
        assert headline == {"marginal": "marginal baseline (sampled)"}.get(
            best["system"], best["system"]
        )
        text = driver.execute_script("return document.body.innerText")
        for words in ("synthetic evshift population", "Sampling floor", "exact marginal floor",
                      "marginal baseline (sampled)", "git commit", "small n"):  # fmt: skip
            assert words in text, words
        height = driver.execute_script("return document.body.scrollHeight")
        driver.set_window_size(1280, min(int(height) + 100, 16000))
        shot = small_run.dir / "report.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        if os.environ.get("SURVEYSIM_SCREENSHOT"):
            shutil.copy(shot, os.environ["SURVEYSIM_SCREENSHOT"])
    finally:
        driver.quit()


def test_provenance_names_the_data_hash_commit_and_seeds(small_run):
    import hashlib
    import subprocess

    from surveysim_core.report import provenance

    rows = dict(provenance(small_run))
    data = (small_run.dir / "data" / "responses.csv").read_bytes()
    assert "synthetic evshift population (generator seed 0, 160 subjects)" in rows["data"]
    assert hashlib.sha256(data).hexdigest() in rows["data"]
    assert rows["model"] == "none (baselines only)"
    assert rows["seeds"].startswith("data 0, split 0, decoding ")
    assert "50 bootstrap draws" in rows["seeds"]
    head = subprocess.run(
        ["git", "-C", str(Path(__file__).parent), "rev-parse", "HEAD"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip
    if head:
        assert rows["git commit"].startswith(head)
    assert "numpy " in rows["packages"] and "pandas " in rows["packages"]
