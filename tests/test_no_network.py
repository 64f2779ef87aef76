"""The headless loop uses no network: init, embed, train, suggest, review and export, each run as
``python -m labeltool.cli`` with outbound sockets blocked.

Every command runs in a network namespace of its own (``unshare -n``, or ``unshare -rn`` without
root; nothing past loopback exists there) and, in any case, with tests/netguard on PYTHONPATH: that
guard makes connect/sendto/DNS lookups past loopback raise and records each attempt, so the test
fails on any attempt, even one that a missing network would have turned into a silent fallback.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sample_helpers import REPO, TEST_IMAGE_SIZE, copy_sample

GUARD = REPO / "tests" / "netguard"


def namespace_prefix() -> list[str]:
    """``unshare -n`` (root) or ``unshare -rn`` where a network namespace can be made, else []."""
    if shutil.which("unshare"):
        for prefix in (["unshare", "-n"], ["unshare", "-rn"]):
            if subprocess.run([*prefix, "true"], capture_output=True).returncode == 0:
                return prefix
    return []


def guarded_env(net_log: Path, home: Path) -> dict[str, str]:
    pythonpath = os.pathsep.join(p for p in (str(GUARD), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": pythonpath, "LABELTOOL_NET_LOG": str(net_log), "HOME": str(home),
            "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0"}  # no offline switches to hide a download


def run_guarded(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    cmd = [*namespace_prefix(), sys.executable, "-m", "labeltool.cli", *args]
    return subprocess.run(cmd, cwd=str(cwd), env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_cli_loop_makes_no_network_call(tmp_path: Path) -> None:
    folder = copy_sample(tmp_path / "sample")
    net_log, home = tmp_path / "net.log", tmp_path / "home"
    env = guarded_env(net_log, home)
    decisions = tmp_path / "decisions.csv"
    steps: list[list[str]] = [
        ["init", str(folder), "--image-size", str(TEST_IMAGE_SIZE)],
        ["embed", str(folder), "--workers", "1"],
        ["train", str(folder), "--epochs", "2", "--max-steps", "30", "--finetune-steps", "20"],
        ["suggest", str(folder), "--batch", "10"],
        ["review", str(folder), "--accept-top", "3"],
        ["review", str(folder), "--decisions", str(decisions)],
        ["export", str(folder), str(tmp_path / "out")],
    ]
    suggested: list[dict[str, str]] = []
    for args in steps:
        if args[0] == "review" and "--decisions" in args:
            decisions.write_text(f"path,action,label,correct\n{suggested[3]['path']},accept,{suggested[3]['class']},\n")
        done = run_guarded(args, env, tmp_path)
        assert done.returncode == 0, f"labeltool {args[0]} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        if args[0] == "train":  # mode auto (the default) says what it is scoring while it decides
            assert "Mode auto: scoring" in done.stderr and "fold 1 of 4" in done.stderr, done.stderr[-2000:]
        if args[0] == "suggest":
            lines = done.stdout.splitlines()
            suggested = list(csv.DictReader(lines[lines.index("rank,image_id,path,class,confidence,p_right,source"):]))
            assert len(suggested) == 10
        attempts = net_log.read_text().splitlines() if net_log.exists() else []
        assert not attempts, f"labeltool {args[0]} tried the network:\n" + "\n".join(attempts)
    assert (tmp_path / "out" / "dataset" / "manifest.parquet").is_file()
    assert any((tmp_path / "out").rglob("*.safetensors")) or any((tmp_path / "out").rglob("*.pt"))


def test_guard_records_and_refuses_an_outside_call(tmp_path: Path) -> None:
    """The guard the loop runs under sees a DNS lookup and a UDP send, and lets loopback through."""
    net_log = tmp_path / "net.log"
    probe = (
        "import socket, urllib.request\n"
        "for call in (lambda: urllib.request.urlopen('http://example.com', timeout=2),\n"
        "             lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('192.0.2.1', 53))):\n"
        "    try:\n        call()\n    except OSError as e:\n        print('refused:', e)\n"
        "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
        "c = socket.create_connection(s.getsockname(), timeout=2); c.close(); print('loopback ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], env=guarded_env(net_log, tmp_path), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("network use blocked by the test guard") == 2 and "loopback ok" in done.stdout, done.stdout
    attempts = net_log.read_text().splitlines()
    assert len(attempts) == 2
    assert "getaddrinfo 'example.com'" in attempts[0] and "sendto ('192.0.2.1', 53)" in attempts[1]
