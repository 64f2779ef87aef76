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
# how far the page is scrolled, whichever element scrolls it
SCROLL = "() => Math.max(window.scrollY, ...[...document.querySelectorAll('*')].map(e => e.scrollTop))"
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


def test_review_cards_in_the_browser(trained_folder: Path, tmp_path: Path) -> None:
    """Worded card buttons on one line each, evidence without a scroll jump, a reject that names
    the file and keeps the grid, the sidebar following a single accept, and no Deploy button."""
    from playwright.sync_api import expect

    with running_app(trained_folder, image_size=64, log=tmp_path / "streamlit.log") as url, \
            browser_page(1500, 1000) as page:
        page.goto(url)
        page.get_by_text("Awaiting review").first.wait_for()
        wait_idle(page)
        main = page.get_by_test_id("stMain")
        assert page.get_by_text("Deploy", exact=True).count() == 0
        heights = {main.get_by_role("button", name=n, exact=True).first.bounding_box()["height"]  # type: ignore[index]
                   for n in ("Accept", "Reject", "Evidence")}
        assert len(heights) == 1 and heights.pop() < 48  # one line of text each, all the same
        for n in ("Accept", "Reject", "Evidence"):
            label = main.get_by_role("button", name=n, exact=True).first.locator("p")
            assert label.evaluate("e => e.scrollWidth <= e.clientWidth + 1"), f"{n} is cut off"

        # evidence of a card further down: the page stays where it is
        cards = main.get_by_role("button", name="Evidence", exact=True)
        cards.nth(13).scroll_into_view_if_needed()
        page.mouse.wheel(0, 300)
        page.wait_for_timeout(500)
        before = page.evaluate(SCROLL)
        assert before > 100, "the page was scrolled down before the click"
        cards.nth(13).click()
        page.get_by_role("dialog").wait_for()
        wait_idle(page)
        after = page.evaluate(SCROLL)
        assert abs(after - before) < 5, (before, after)
        assert page.get_by_role("dialog").get_by_text("suggested: ").count() == 1
        page.keyboard.press("Escape")
        wait_idle(page)

        # a reject: a message naming the file, an Undo beside it, the card stays in place, greyed
        sidebar = page.get_by_test_id("stSidebar").get_by_test_id("stMetric").filter(has_text="Labeled").first
        labeled = int(sidebar.get_by_test_id("stMetricValue").inner_text())
        box = main.get_by_role("button", name="Reject", exact=True).nth(1).bounding_box()
        main.get_by_role("button", name="Reject", exact=True).nth(1).click()
        expect(main.get_by_text("Rejected").first).to_be_visible()
        wait_idle(page)
        assert main.get_by_role("button", name="Undo", exact=True).count() == 1
        still = main.get_by_role("button", name="Rejected").first
        assert still.is_disabled()
        moved = still.bounding_box()
        assert moved is not None and box is not None  # the message did not push the grid down
        assert abs(moved["x"] - box["x"]) < 2 and abs(moved["y"] - box["y"]) < 2, (box, moved)
        page.screenshot(path=str(tmp_path / "after-reject.png"))

        # a single accept: the sidebar count follows at once
        main.get_by_role("button", name="Accept", exact=True).first.click()
        expect(sidebar.get_by_test_id("stMetricValue")).to_have_text(str(labeled + 1), timeout=30_000)


def test_done_page_leads_to_the_export_tab(trained_folder: Path) -> None:
    """With nothing left to review, 'Go to Export' opens the Export tab (from inside the page's fragment)."""
    with running_app(trained_folder, image_size=64) as url, browser_page() as page:
        page.goto(url)
        page.get_by_text("Awaiting review").first.wait_for()
        wait_idle(page)
        page.get_by_role("button", name=re.compile(r"Accept all shown \(\d+\)")).click()
        page.get_by_text("Nothing left to review").wait_for()
        wait_idle(page)
        page.get_by_role("button", name="Go to Export").click()
        page.get_by_role("textbox", name="Export folder").wait_for()
        assert page.get_by_role("tab", name="Export").get_attribute("aria-selected") == "true"
