"""The test suite, laid out like the code: engine/ and app/ mirror the packages they test (a module's fuzz and
hardening tests sit next to its other tests), web/ runs the page's JavaScript, benchmarks/ checks the benchmarks,
integration/ drives several modules end to end (CLI commands, subprocesses, Ray), e2e/ a browser or audio device.
Helpers shared by many tests stay here at the top (speech, tiny_models, server_clients, pulse, the references)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]  # the repository root, wherever a test file sits below tests/
