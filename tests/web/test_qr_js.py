"""The page's QR encoder (web/qr.js, run in Node.js) draws exactly the modules an independent encoder (python-qrcode)
draws for the same text, version and mask, for every version and mask it supports; with its own mask choice the
code reads back as the link with a real decoder (zbarimg, where installed); text too long for it is refused."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests import REPO
from tests.web.node import run_node

qrcode = pytest.importorskip("qrcode")

QR_JS = REPO / "web" / "qr.js"
LINK = "http://192.168.1.20:8765/watch/ab12cd34?token=Vq3xP0_kLm9sTz8aBc4d&view=projection"

# Reads [[text, mask or null], ...] on stdin; prints [[version, mask, "0101\n...", ...] or [error], ...].
RUNNER = f"""
import {{ encodeQr }} from {json.dumps(QR_JS.as_uri())};
let input = "";
for await (const chunk of process.stdin) input += chunk;
process.stdout.write(JSON.stringify(JSON.parse(input).map(([text, mask]) => {{
  try {{
    const q = encodeQr(text, {{ mask }});
    return [q.version, q.mask, q.modules.map((row) => row.map((d) => (d ? "1" : "0")).join("")).join("\\n")];
  }} catch (e) {{ return [String(e.message)]; }}
}})));
"""


def run_js(cases: list[tuple[str, int | None]]) -> list[list]:
    return run_node(RUNNER, cases, needed_for="web/qr.js", timeout_s=120)


def reference(text: str, mask: int) -> tuple[int, str]:
    from qrcode.constants import ERROR_CORRECT_M

    q = qrcode.QRCode(error_correction=ERROR_CORRECT_M, mask_pattern=mask, border=0)
    q.add_data(qrcode.util.QRData(text.encode("utf-8"), mode=qrcode.util.MODE_8BIT_BYTE))
    q.make(fit=True)
    return q.version, "\n".join("".join("1" if d else "0" for d in row) for row in q.modules)


def test_every_version_and_mask_matches_an_independent_encoder() -> None:
    # lengths that need versions 1..15 at level M (byte capacity 14, 26, 42, 62, 84, 106, 122, 152, 180, 213, 251,
    # 287, 331, 362, 412), plus non-ASCII text (UTF-8 bytes)
    lengths = [1, 14, 26, 27, 42, 62, 84, 106, 122, 152, 180, 213, 251, 287, 331, 362, 412]
    texts = [(LINK * 6)[:n] for n in lengths] + ["https://example.org/watch/zürich?token=ÄÖÜ-日本"]
    cases = [(t, m) for t in texts for m in range(8)]
    got = run_js(cases)
    versions = set()
    for (text, mask), (version, used, modules) in zip(cases, got, strict=True):
        assert used == mask
        assert (version, modules) == reference(text, mask), (len(text), mask)
        versions.add(version)
    assert versions == set(range(1, 16))


def test_too_long_text_is_refused() -> None:
    [[message]] = run_js([("x" * 413, None)])
    assert "do not fit" in message


def test_the_link_reads_back_with_a_decoder(tmp_path: Path) -> None:
    """The code the page draws (its own mask choice, quiet zone added) decodes to the link."""
    zbarimg = shutil.which("zbarimg")
    if zbarimg is None:
        pytest.skip("zbarimg (Debian zbar-tools) is not installed")
    from PIL import Image

    [[version, mask, modules]] = run_js([(LINK, None)])
    assert (version, modules) == reference(LINK, mask)
    rows = modules.split("\n")
    n, scale, quiet = len(rows), 8, 4
    img = Image.new("L", ((n + 2 * quiet) * scale,) * 2, 255)
    for r, row in enumerate(rows):
        for c, dark in enumerate(row):
            if dark == "1":
                img.paste(
                    0, ((c + quiet) * scale, (r + quiet) * scale, (c + quiet + 1) * scale, (r + quiet + 1) * scale)
                )
    img.save(tmp_path / "link.png")
    done = subprocess.run(
        [zbarimg, "--raw", "-q", str(tmp_path / "link.png")], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.stdout.strip() == LINK, done.stderr
