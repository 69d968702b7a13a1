"""The Dockerfile, checked without a Docker engine: what it promises (non-root user, port, data
volume, health check, environment) and that its start and health-check commands work as written,
run here against this checkout's installed aggregator.

Only the container's paths are swapped for a temporary directory and the listen address for
loopback; the commands are otherwise exactly the image's.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pectus.hardware.opcua_server import free_port

ROOT = Path(__file__).resolve().parent.parent
DATA = "/usr/src/app/data"


def instructions() -> dict[str, list[str]]:
    """Instruction -> its arguments, one entry per occurrence; continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, rest = line.partition(" ")
            found.setdefault(name.upper(), []).append(rest.strip())
    return found


def test_the_image_runs_as_a_user_on_port_8300_with_the_data_volume_and_a_health_check():
    dockerfile = instructions()
    assert dockerfile["USER"] == ["pectus"]
    assert "10001" in dockerfile["RUN"][0]  # a fixed uid, so ops can chown the host directory
    assert dockerfile["EXPOSE"] == ["8300"]
    assert json.loads(dockerfile["VOLUME"][0]) == [DATA]
    assert dockerfile["WORKDIR"] == ["/usr/src/app"]
    assert len(dockerfile["HEALTHCHECK"]) == 1


def test_the_images_start_and_health_check_commands_serve_and_report_healthy(tmp_path):
    dockerfile = instructions()
    port = free_port()
    start = json.loads(dockerfile["CMD"][-1])
    start = [part.replace(DATA, str(tmp_path / "data")).replace("0.0.0.0", "127.0.0.1") for part in start]
    health = shlex.split(dockerfile["HEALTHCHECK"][0].split(" CMD ", 1)[1])
    env = {**os.environ, "AGGREGATOR_PORT": str(port),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("ENABLE_AZURE_AUTHENTICATION", None)
    server = subprocess.Popen(start, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while subprocess.run(health, env=env, capture_output=True).returncode != 0:
            assert server.poll() is None, "the image's start command exited"
            if time.monotonic() > deadline:
                pytest.fail("the health check never passed")
        assert (tmp_path / "data" / "open_pectus_aggregator.sqlite3").exists()
    finally:
        server.terminate()
        server.wait(10)
    # Stopped: the same health check now fails, so it does test the server.
    assert subprocess.run(health, env=env, capture_output=True).returncode != 0
