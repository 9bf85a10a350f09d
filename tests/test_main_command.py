"""The README's main command, run as a new user would on a clean clone, and what the operator then sees.

One night serves both checks: `make night` in a fresh clone (its own venv, Kafka and Prefect server on free
ports, no ../shared beside it) must end with an archive on disk and the UI address; then headless Chromium
opens that address and must show the night's flow run and its summary artifact (a screenshot is kept in
test-output/).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from alertdist.infra import kafka_local

REPO = Path(__file__).resolve().parents[1]
OUTPUT = REPO / "test-output"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Every element of the page that scrolls sideways: its tag, class and how many pixels it hides.
SCROLLED_SIDEWAYS = """() => Array.from(document.querySelectorAll('*'))
    .filter(e => e.scrollWidth > e.clientWidth + 1 && ['auto', 'scroll'].includes(getComputedStyle(e).overflowX))
    .map(e => `${e.tagName}.${e.className}: ${e.scrollWidth - e.clientWidth}px`)"""


def _make_night(clone: Path, env: dict, night_args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "night", f"NIGHT_ARGS={night_args}"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def night_on_a_clean_clone(tmp_path_factory):
    clone = tmp_path_factory.mktemp("newuser") / "alertdist"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALERTDIST_", "PREFECT_", "VIRTUAL_ENV"))}
    env.update(ALERTDIST_KAFKA_PORT=str(kafka_local.free_ports(1)), ALERTDIST_PREFECT_PORT=str(kafka_local.free_port()))
    env.update(ALERTDIST_PROMETHEUS_PORT=str(kafka_local.free_port()))  # make night starts Prometheus too
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if ".venv" not in p)
    try:
        done = _make_night(clone, env, "--alerts 200 --partitions 2 --night 20231012", 1500)
        yield clone, env, done
    finally:
        subprocess.run(["make", "stop"], cwd=clone, env=env, capture_output=True, timeout=120)


def test_make_night_on_a_clean_clone_archives_the_night_and_prints_the_ui(night_on_a_clean_clone):
    clone, env, done = night_on_a_clean_clone
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert not (clone.parent / "shared").exists()  # the main job never needs the real data
    archive = Path(re.search(r"^Archive:\s+(\S+)", done.stdout, re.M).group(1))
    assert archive == clone / ".alertdist" / "archive"
    tarballs = sorted(p.name for p in archive.glob("ztf_*_20231012.tar.gz"))
    assert tarballs == ["ztf_caltech_20231012.tar.gz", "ztf_partnership_20231012.tar.gz", "ztf_public_20231012.tar.gz"]
    assert (archive / "MD5SUMS").is_file() and (archive / "manifests" / "ztf_20231012.json").is_file()
    assert "200 alerts published, 200 archived" in done.stdout
    assert re.search(
        rf"Prefect UI: http://127\.0\.0\.1:{env['ALERTDIST_PREFECT_PORT']}/runs/flow-run/[0-9a-f-]{{36}}", done.stdout
    )


def test_the_first_night_shows_no_broker_warnings(night_on_a_clean_clone):
    """A fresh broker answers "Not coordinator" while it creates its internal topics: routine, not a warning."""
    _, _, done = night_on_a_clean_clone
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Not coordinator" not in done.stderr and "NOT_COORDINATOR" not in done.stderr, done.stderr[-4000:]


def test_every_python_snippet_of_the_readme_runs_as_written_after_the_main_job(night_on_a_clean_clone):
    clone, env, done = night_on_a_clean_clone
    assert done.returncode == 0, done.stderr[-2000:]
    snippets = re.findall(r"^```python\n(.*?)^```$", (clone / "README.md").read_text(), re.M | re.S)
    assert len(snippets) >= 3  # tarball records, DuckDB, pyarrow + pandas
    for snippet in snippets:
        ran = subprocess.run(
            [
                str(clone / ".venv" / "bin" / "python"),
                "-c",
                snippet + "\nprint('rows', len(locals().get('bright', locals().get('frame', []))))",
            ],
            cwd=clone,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert ran.returncode == 0, snippet + ran.stderr[-3000:]


def test_make_night_again_the_same_day_runs_a_new_night_and_names_it(night_on_a_clean_clone):
    clone, env, first = night_on_a_clean_clone
    assert first.returncode == 0, first.stderr[-2000:]
    ran = []
    for _ in range(2):  # the first takes tonight (20231012 was named), the second the night before
        again = _make_night(clone, env, "--alerts 30 --partitions 2", 900)
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        night = re.search(r"^Night (\d{8}): 30 alerts published, 30 archived", again.stdout, re.M).group(1)
        assert re.search(rf"Running night {night} \(the latest night this cluster has not run yet", again.stderr)
        assert "night-tonight" not in again.stdout + again.stderr
        ran.append(night)
    assert ran[0] != ran[1] and "20231012" not in ran


def test_the_prefect_ui_shows_the_night_and_its_summary(night_on_a_clean_clone):
    if CHROMIUM is None:
        pytest.fail("Chromium is not installed: run `make setup-test` (installs Debian's chromium) and retry")
    from playwright.sync_api import sync_playwright

    clone, _env, done = night_on_a_clean_clone
    assert done.returncode == 0, done.stderr[-2000:]
    auth = (clone / ".alertdist" / "prefect" / "auth").read_text().strip()  # the server's login (basic auth)
    run_url = re.search(r"Prefect UI: (\S+)", done.stdout).group(1)
    base = run_url.split("/runs/")[0]
    OUTPUT.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            # what the UI's login page stores once the operator has typed the login
            page.add_init_script(f"localStorage.setItem('prefect-password', btoa({json.dumps(auth)}))")
            page.goto(run_url, wait_until="networkidle", timeout=60_000)
            page.get_by_text("night-20231012").first.wait_for(timeout=30_000)
            page.get_by_text("Completed").first.wait_for(timeout=30_000)
            page.screenshot(path=str(OUTPUT / "ui-night-run.png"), full_page=True)

            page.goto(f"{base}/artifacts/key/night-summary-ztf-20231012", wait_until="networkidle", timeout=60_000)
            page.get_by_text("Night 20231012: every alert accounted for").first.wait_for(timeout=30_000)
            page.locator("a[href*='/artifacts/artifact/']").first.click()
            page.get_by_text("1 public").first.wait_for(timeout=30_000)
            text = page.inner_text("body")
            page.screenshot(path=str(OUTPUT / "ui-night-summary.png"), full_page=True)
            # at 1,600 px the summary needs no sideways scrolling (its filters' rows were columns, cut off)
            page.set_viewport_size({"width": 1600, "height": 1000})
            page.reload(wait_until="networkidle", timeout=60_000)
            page.get_by_text("1 public").first.wait_for(timeout=30_000)
            page.get_by_text("variable_stars passed / errors").first.wait_for(timeout=30_000)  # rows are named
            scrolled_sideways = page.evaluate(SCROLLED_SIDEWAYS)
            page.screenshot(path=str(OUTPUT / "ui-night-summary-1600.png"), full_page=True)
            # a finished filter's progress reads 100 % (it read 0 %: a live night has no total)
            page.goto(f"{base}/artifacts/key/filter-ztf-20231012-variable-stars-0", wait_until="networkidle")
            page.locator("a[href*='/artifacts/artifact/']").first.click()  # its latest version
            page.get_by_text("Progress: 100%").first.wait_for(timeout=30_000)
            page.screenshot(path=str(OUTPUT / "ui-filter-progress.png"), full_page=True)
        finally:
            browser.close()
    assert "2 partnership" in text and "3 caltech" in text and "published" in text
    assert scrolled_sideways == [], f"elements wider than a 1,600 px page: {scrolled_sideways}"
