"""A browser (Debian's chromium, driven by Playwright) opens the live panel's artifact in the Prefect UI while the
panel's flow is still running, and keeps a screenshot in test-output/ui-live-panel.png."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time

import pytest

from alertdist.infra import kafka_local, prefect_local
from alertdist.settings import Settings
from tests.metrics_support import lagging_group
from tests.test_main_command import CHROMIUM, OUTPUT

NIGHT = dt.date(2024, 1, 1)


def test_a_browser_shows_the_live_panel_while_the_night_runs(kafka_bootstrap, unique, tmp_path):
    if CHROMIUM is None:
        pytest.fail("Chromium is not installed: run `make setup-test` (installs Debian's chromium) and retry")
    from playwright.sync_api import sync_playwright
    from prefect import flow
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    from alertdist.tasks.live_ops import start_live_panel

    survey = f"u{unique}"
    _, group = lagging_group(kafka_bootstrap, survey, produced=9, committed=3)

    server = prefect_local.PrefectServer(home=tmp_path / "prefect", port=kafka_local.free_port())
    prefect_local.start(server, log=lambda *_: None)
    settings = Settings.load(bootstrap_servers=kafka_bootstrap, survey=survey, prometheus_port=kafka_local.free_port())
    night_over = threading.Event()
    outcome: dict = {}

    @flow(name="live-panel-ui-test")
    def night_running() -> int:
        panel = start_live_panel(settings, NIGHT, every_s=1.0)
        night_over.wait(300)
        panel.stop()
        return panel.updates

    def run() -> None:
        with temporary_settings({PREFECT_API_URL: server.api_url, PREFECT_API_AUTH_STRING: server.auth_string()}):
            outcome["updates"] = night_running()

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    OUTPUT.mkdir(exist_ok=True)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                # the server asks for its login: stored as the UI's login page stores it
                login = json.dumps(server.auth_string())
                page.add_init_script(f"localStorage.setItem('prefect-password', btoa({login}))")
                url = f"{server.ui_url}/artifacts/key/night-live-{survey}-20240101"
                deadline = time.monotonic() + 120
                while True:  # the key's page lists its versions once the panel has written the first
                    page.goto(url, wait_until="networkidle", timeout=60_000)
                    if "live lag and latency" in page.inner_text("body") or time.monotonic() > deadline:
                        break
                    time.sleep(2)
                page.locator("a[href*='/artifacts/artifact/']").first.click()  # the latest version
                page.get_by_text("live at").first.wait_for(timeout=30_000)
                page.get_by_text(group).first.wait_for(timeout=30_000)
                assert runner.is_alive()  # the night is still running
                text = page.inner_text("body")
                page.screenshot(path=str(OUTPUT / "ui-live-panel.png"), full_page=True)
            finally:
                browser.close()
    finally:
        night_over.set()
        runner.join(120)
        prefect_local.stop(server, log=lambda *_: None)
    assert "Night 20240101: live at" in text and "6" in text  # 9 published, 3 committed
    assert "Prometheus not answering" in text  # no Prometheus here: the lag still shows, and says what to start
    assert outcome["updates"] >= 2
