"""Running a page module in Node.js from a test: a script that reads JSON on stdin and prints JSON."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any

import pytest


def run_node(script: str, payload: Any, *, needed_for: str, timeout_s: float = 60) -> Any:
    """Run the ES-module `script` in Node.js with `payload` as JSON on stdin; what it prints, parsed as JSON.

    Without Node.js the test is skipped, or fails under CI (it is needed to run `needed_for`, e.g. web/qr.js)."""
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI"):
            pytest.fail(f"Node.js is needed to run {needed_for}")
        pytest.skip("Node.js is not installed")
    done = subprocess.run(
        [node, "--input-type=module", "-e", script],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=timeout_s,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)
