"""The app is closed by default: ``streamlit run app.py`` listens on loopback only and calls nowhere.

Each check starts the server inside a new network namespace that has nothing but loopback
(``unshare -n``, or ``unshare -rn`` without root), with tests/netguard on PYTHONPATH so every
attempt to reach past loopback is recorded. Inside, a driver (this file run as a script) waits for
the page, fetches it over 127.0.0.1, reads the listening sockets from /proc/net and reports JSON.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GUARD = REPO / "tests" / "netguard"
DEFAULT_PORT = 8501  # streamlit's own default; free in a namespace of our own


def namespace_prefix() -> list[str] | None:
    """The ``unshare`` command that gives a process a network of its own here, or None."""
    if not shutil.which("unshare"):
        return None
    for prefix in (["unshare", "-n"], ["unshare", "-rn"]):
        if subprocess.run([*prefix, "true"], capture_output=True).returncode == 0:
            return prefix
    return None


NAMESPACE = namespace_prefix()
needs_namespace = pytest.mark.skipif(
    NAMESPACE is None, reason="no network namespace: `unshare -n` (root) and `unshare -rn` (user namespaces) both failed")


def loopback_up() -> None:
    """Bring ``lo`` up (a new network namespace starts with it down)."""
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        flags = struct.unpack("16sH22x", fcntl.ioctl(s, siocgifflags, struct.pack("16sH22x", b"lo", 0)))[1]
        fcntl.ioctl(s, siocsifflags, struct.pack("16sH22x", b"lo", flags | iff_up))


def hex_address(field: str) -> tuple[str, int]:
    """``0100007F:1F95`` (/proc/net/tcp) or its 32-digit IPv6 form -> (address, port)."""
    addr, port = field.split(":")
    raw = bytes.fromhex(addr)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # each 32-bit word is host order
    family = socket.AF_INET if len(raw) == 4 else socket.AF_INET6
    return socket.inet_ntop(family, words), int(port, 16)


def listening() -> list[tuple[str, str, int]]:
    """(table, address, port) of every listening TCP socket and every bound UDP socket here."""
    found = []
    for table, wanted in (("tcp", "0A"), ("tcp6", "0A"), ("udp", "07"), ("udp6", "07")):
        path = Path("/proc/net") / table
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == wanted:
                found.append((table, *hex_address(cols[1])))
    return found


def is_loopback(address: str) -> bool:
    return address.startswith("127.") or address in ("::1", "::ffff:127.0.0.1")


def render_once(url: str) -> dict[str, int]:
    """Open ``url`` in headless Chromium until the app's first run is over (so the app itself ran)."""
    from browser_util import browser_page, wait_idle

    with browser_page() as page:
        page.goto(url)
        page.get_by_test_id("stMain").wait_for()
        page.get_by_role("tab", name="Review").first.wait_for()
        wait_idle(page)
        return {"tabs": page.get_by_role("tab").count(), "exceptions": page.get_by_test_id("stException").count(),
                "deploy_buttons": page.get_by_test_id("stAppDeployButton").count()
                + page.get_by_role("button", name="Deploy").count()}


def drive(cmd: list[str], port: int, cwd: str, render: bool, timeout: float = 120.0) -> dict[str, object]:
    """Inside the namespace: start ``cmd`` in ``cwd``, fetch its page on loopback (and render it in
    Chromium when ``render``), report what listens."""
    loopback_up()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    report: dict[str, object] = {}
    try:
        deadline = time.monotonic() + timeout
        while "health" not in report:
            if proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with code {proc.returncode}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    report["health"] = r.status
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"streamlit did not answer on {url} in {timeout:.0f} s") from None
                time.sleep(0.3)
        with urllib.request.urlopen(url, timeout=10) as r:
            page = r.read().decode("utf-8", "replace")
        report["page_status"], report["page_is_streamlit"] = r.status, "<title>Streamlit</title>" in page
        if render:
            report["rendered"] = render_once(url)
        time.sleep(1.0)  # let the start-up finish printing its URLs (where the outside lookups were)
        report["listening"] = listening()
    finally:
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        report["log"] = out.decode("utf-8", "replace")[-4000:]
    return report


def run_closed(tmp_path: Path, cmd: list[str], port: int, cwd: Path = REPO,
               render: bool = False) -> tuple[dict[str, object], list[str]]:
    """Run ``drive(cmd)`` in a fresh network namespace under the guard; (report, guard log lines)."""
    assert NAMESPACE is not None
    net_log = tmp_path / "net.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(GUARD), os.environ.get("PYTHONPATH", "")]),
           "LABELTOOL_NET_LOG": str(net_log), "HOME": str(tmp_path / "home")}  # no user-level streamlit config
    spec = json.dumps({"cmd": cmd, "port": port, "cwd": str(cwd), "render": render})
    done = subprocess.run([*NAMESPACE, sys.executable, __file__, spec], cwd=str(REPO), env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"driver failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    report = json.loads(done.stdout.strip().splitlines()[-1])
    attempts = net_log.read_text().splitlines() if net_log.exists() else []
    return report, attempts


def assert_closed(report: dict[str, object], attempts: list[str], port: int) -> None:
    log = report["log"]
    assert report["health"] == 200 and report["page_status"] == 200, log
    assert report["page_is_streamlit"], "the page served is not the app's"
    sockets = [tuple(x) for x in report["listening"]]  # type: ignore[attr-defined]
    assert any(p == port for _, _, p in sockets), f"nothing listens on port {port}: {sockets}\n{log}"
    open_ = [s for s in sockets if not is_loopback(s[1])]
    problems = [f"listening beyond loopback: {s}" for s in open_] + [f"network call: {a}" for a in attempts]
    assert not problems, "\n".join(problems) + f"\n--- server log ---\n{log}"


def app_args(folder: Path) -> list[str]:
    return ["--", "--folder", str(folder), "--image-size", "64", "--no-umap"]


@needs_namespace
def test_plain_streamlit_run_listens_on_loopback_and_calls_nowhere(app_folder: Path, tmp_path: Path) -> None:
    """What a user types in the repository: only .streamlit/config.toml decides, no flags. Where
    Chromium is installed the page is also rendered, so the app's own run is under the guard too."""
    from browser_util import missing_browser

    render = missing_browser() is None
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", *app_args(app_folder)]
    report, attempts = run_closed(tmp_path, cmd, DEFAULT_PORT, render=render)
    assert_closed(report, attempts, DEFAULT_PORT)
    if render:
        assert report["rendered"] == {"tabs": 5, "exceptions": 0, "deploy_buttons": 0}, report
    assert "URL: http://127.0.0.1:8501" in str(report["log"]), report["log"]


@needs_namespace
def test_test_and_screenshot_server_is_closed(app_folder: Path, tmp_path: Path) -> None:
    """The command tests/app/browser_util.py (and so docs/take_screenshots.py) starts, from a folder
    without .streamlit/config.toml: its flags alone keep it closed."""
    from browser_util import server_command

    cmd = server_command(app_folder, port=8765, image_size=64, extra=("--no-umap",))
    report, attempts = run_closed(tmp_path, cmd, 8765, cwd=tmp_path)
    assert_closed(report, attempts, 8765)


def test_config_file_and_server_flags_say_the_same() -> None:
    """.streamlit/config.toml and the flags browser_util passes set the same closed options."""
    from browser_util import CLOSED_SERVER_OPTIONS

    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    flat = {f"{section}.{key}": value for section, table in config.items() for key, value in table.items()}
    assert flat == CLOSED_SERVER_OPTIONS
    assert flat["server.address"] == "127.0.0.1"
    assert flat["browser.gatherUsageStats"] is False
    assert flat["server.fileWatcherType"] == "none"


def test_proc_net_addresses_are_decoded() -> None:
    assert hex_address("0100007F:1F95") == ("127.0.0.1", 8085)
    assert hex_address("00000000:0050") == ("0.0.0.0", 80)
    assert hex_address("00000000000000000000000001000000:1F95") == ("::1", 8085)
    assert hex_address("00000000000000000000000000000000:1F95") == ("::", 8085)
    assert not is_loopback("::") and not is_loopback("0.0.0.0") and is_loopback("127.0.0.1")


if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    print(json.dumps(drive(spec["cmd"], spec["port"], spec["cwd"], spec["render"])))
