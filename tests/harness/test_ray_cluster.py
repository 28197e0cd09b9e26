"""A study on a real two-node Ray cluster gives the process executor's records.

Two Ray nodes (1 CPU each) are started on this machine with ``ray start`` (a head on a free
port, a second node joining it), with token authentication as a secured cluster needs
(``RAY_AUTH_MODE=token``; the token is passed in ``RAY_AUTH_TOKEN``, so the user's
``~/.ray/auth_token`` is never touched). The study runs through the CLI with
``--executor ray --ray-address``; its records must equal the process executor's apart from
timings and moments. Both ``ray start`` processes run with ``--block`` in their own process
groups and are ended by those ids in ``finally``: ``ray stop --force`` would end every Ray on
the machine, other people's too. Every step has a timeout (Ray's start-up hangs for minutes
when loopback networking is down); the test skips, saying so, only when Ray cannot start.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from harness.runner import run_study
from harness.study import parse_study
from tests.harness.test_runner import ROOT, SMALL, comparable

NODES_SCRIPT = """
import ray, sys
ray.init(address=sys.argv[1], log_to_driver=False)
import time
for _ in range(100):
    nodes = [n for n in ray.nodes() if n["Alive"]]
    if len(nodes) == 2:
        break
    time.sleep(0.2)
print(sorted(n["Resources"].get("CPU", 0) for n in nodes))
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _listening(port: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.2)
    return False


def _end(process: subprocess.Popen) -> None:
    """SIGTERM to the process group this test started, then SIGKILL if it lingers."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def test_a_study_on_a_two_node_cluster_gives_the_process_records(tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'estibench[ray]')")
    ray_cli = Path(sys.executable).with_name("ray")
    port = _free_port()
    address = f"127.0.0.1:{port}"
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    env.pop("RAY_ADDRESS", None)
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths are limited
    started = []
    try:
        head = subprocess.Popen(
            [str(ray_cli), "start", "--head", "--block", f"--port={port}", "--num-cpus=1",
             "--node-ip-address=127.0.0.1", "--include-dashboard=false",
             "--disable-usage-stats", f"--temp-dir={temp}"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        started.append(head)
        if not _listening(port, 60):
            pytest.skip(f"the Ray head did not listen on {address} within 60 s on this machine")
        worker = subprocess.Popen(
            [str(ray_cli), "start", "--block", f"--address={address}", "--num-cpus=1",
             "--node-ip-address=127.0.0.1", "--disable-usage-stats"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        started.append(worker)
        nodes = subprocess.run([sys.executable, "-c", NODES_SCRIPT, address], env=env,
                               capture_output=True, text=True, timeout=60)
        assert nodes.returncode == 0, nodes.stderr[-2000:]
        assert nodes.stdout.strip().splitlines()[-1] == "[1.0, 1.0]", nodes.stdout  # two nodes

        path = tmp_path / "small.toml"
        path.write_text(SMALL)
        command = [sys.executable, "-m", "harness.cli", "study", "run", str(path), "--out",
                   str(tmp_path / "ray"), "--executor", "ray", "--ray-address", address]
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=180)
        assert result.returncode == 0, result.stderr[-2000:]
        assert "15 done, 0 failed" in result.stdout + result.stderr
        assert "InvalidAuthToken" not in result.stderr
    finally:
        for process in reversed(started):
            _end(process)
    study = parse_study(SMALL)
    run_study(study, tmp_path / "process", executor="process", workers=2, show_progress=False)
    for kind in ("measure", "train"):
        assert comparable(tmp_path / "process", kind) == comparable(tmp_path / "ray", kind)
