"""The app in a real browser: headless Chromium (Debian's package) driven by Playwright.

Skips when chromium or playwright is missing; ``.ci/browser_setup.sh`` installs both.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from app_helpers import labeled_count
from browser_util import browser_page, metric_value, missing_browser, running_app, wait_idle

REASON = missing_browser()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")


def test_accept_all_shown_in_the_browser(trained_folder: Path, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    before_store = labeled_count(trained_folder)
    log = tmp_path / "streamlit.log"
    outside: list[str] = []
    with running_app(trained_folder, image_size=64, log=log) as url, browser_page() as page:
        page.on("request", lambda r: outside.append(r.url) if not r.url.startswith((url, "data:", "blob:")) else None)
        page.goto(url)
        page.get_by_text("Awaiting review").first.wait_for()
        wait_idle(page)
        before = int(metric_value(page, "Labeled"))
        assert before == before_store
        button = page.get_by_role("button", name=re.compile(r"Accept all shown \(\d+\)"))
        shown = int(re.search(r"\((\d+)\)", button.inner_text()).group(1))  # type: ignore[union-attr]
        assert shown > 0
        button.click()
        value = page.get_by_test_id("stMain").get_by_test_id("stMetric").filter(has_text="Labeled").first
        expect(value.get_by_test_id("stMetricValue")).to_have_text(str(before + shown), timeout=60_000)
        wait_idle(page)
        page.screenshot(path=str(tmp_path / "review-after-accept.png"), full_page=True)
        sidebar = page.get_by_test_id("stSidebar").get_by_test_id("stMetric").filter(has_text="Labeled").first
        expect(sidebar.get_by_test_id("stMetricValue")).to_have_text(str(before + shown), timeout=30_000)
    assert outside == [], "the page must not fetch anything from the network"
    assert (tmp_path / "review-after-accept.png").stat().st_size > 10_000
    assert labeled_count(trained_folder) == before_store + shown
    assert "Traceback" not in log.read_text(errors="replace")
