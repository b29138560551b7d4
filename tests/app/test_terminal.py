"""The terminal caption renderer (app/terminal.py): plain lines without a TTY, a dimmed partial redrawn on one."""

from __future__ import annotations

import io

from app.terminal import LiveCaptions


def test_captions_plain_lines_when_not_a_tty():
    """Without a TTY only committed text is written, as whole lines at sentence ends, without escape codes."""
    out = io.StringIO()
    c = LiveCaptions(out, tty=False)
    c.partial("Good mor")
    c.commit(" Good morning.")
    c.commit(" Today")
    c.partial(" is the")
    c.close()
    assert out.getvalue() == "Good morning.\nToday\n"


def test_captions_dim_partial_rewritten_in_place_on_a_tty():
    """On a TTY the partial tail is dimmed and the line is redrawn in place."""
    out = io.StringIO()
    c = LiveCaptions(out, tty=True)
    c.commit(" Good")
    c.partial(" morning")
    assert out.getvalue().endswith("\r\x1b[2KGood\x1b[2m morning\x1b[0m")
    c.commit(" morning.")
    assert out.getvalue().endswith("\r\x1b[2KGood morning.\n")
