"""Start ``streamlit run app.py`` on a free port and drive Debian's Chromium with Playwright.

Used by the browser test and by ``docs/take_screenshots.py``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("LABELTOOL_CHROMIUM") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]
# the options of .streamlit/config.toml, as "section.key": value (a test keeps the two the same)
CLOSED_SERVER_OPTIONS: dict[str, object] = {
    "server.address": "127.0.0.1",
    "server.fileWatcherType": "none",
    "server.runOnSave": False,
    "server.showEmailPrompt": False,
    "browser.gatherUsageStats": False,
    "client.toolbarMode": "viewer",
    "client.showErrorLinks": False,
}


def missing_browser() -> str | None:
    """Why the browser test cannot run here, or None when it can."""
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        return f"chromium not installed at {CHROMIUM}; run .ci/browser_setup.sh"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed; run .ci/browser_setup.sh"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_command(folder: Path, *, port: int, image_size: int | None = 64,
                   extra: tuple[str, ...] = ("--no-umap",)) -> list[str]:
    """The ``streamlit run app.py`` command line, closed as .streamlit/config.toml is (flags win over
    that file, which streamlit reads only from the working directory)."""
    flags = [f"--{name}={str(value).lower() if isinstance(value, bool) else value}"
             for name, value in CLOSED_SERVER_OPTIONS.items()]
    cmd = [sys.executable, "-m", "streamlit", "run", str(REPO / "app.py"), *flags, "--server.headless=true",
           f"--server.port={port}", "--", "--folder", str(folder), *extra]
    if image_size:
        cmd += ["--image-size", str(image_size)]
    return cmd


@contextmanager
def running_app(folder: Path, *, image_size: int | None = 64, log: Path | None = None,
                extra: tuple[str, ...] = ("--no-umap",), timeout: float = 90.0) -> Iterator[str]:
    """``streamlit run app.py`` on ``folder``; yields the page URL and stops the server after."""
    port = free_port()
    cmd = server_command(folder, port=port, image_size=image_size, extra=extra)
    out = open(log, "wb") if log else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, cwd=str(REPO), stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with code {proc.returncode}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("streamlit did not come up")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log:
            out.close()  # type: ignore[union-attr]


@contextmanager
def browser_page(width: int = 1500, height: int = 1000) -> Iterator[Any]:
    """A Playwright page in headless Chromium."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(60_000)
            yield page
        finally:
            browser.close()


def wait_idle(page: Any, timeout: float = 60.0) -> None:
    """Wait until the app has finished its run (no 'running' status widget)."""
    page.wait_for_timeout(300)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout * 1000
    )
    page.wait_for_timeout(200)


def wait_plots(page: Any) -> None:
    """Wait until every plotly chart on the page has drawn."""
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stSkeleton\"]') && "
        "[...document.querySelectorAll('.js-plotly-plot')].every(p => p.querySelector('.main-svg'))"
    )
    page.wait_for_timeout(800)


def metric_value(page: Any, label: str) -> str:
    """Text of the first metric labelled ``label`` in the main area."""
    metric = page.get_by_test_id("stMain").get_by_test_id("stMetric").filter(
        has=page.locator("[data-testid='stMetricLabel']", has_text=label)
    ).first
    return str(metric.locator("[data-testid='stMetricValue']").inner_text()).strip()
