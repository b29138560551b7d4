"""One caption rule: the page's downloads (web/captions.js, run in Node.js) and app/captions.py turn the same commits
into byte-identical WebVTT and SRT files, on a real talk's commits and on seeded random ones built to hit every
rule (sentence and clause ends, pauses, long cues, glued pieces, CJK, astral characters, unusual spaces)."""

from __future__ import annotations

import json
import random

from app.captions import RULES_PATH, CaptionConfig, build_cues, format_captions
from engine.events import Commit
from tests import REPO
from tests.app.test_captions import TALK
from tests.web.node import run_node

CAPTIONS_JS = REPO / "web" / "captions.js"

# Reads [[commit, ...], ...] as JSON on stdin; prints [[vtt, srt], ...] as JSON.
RUNNER = f"""
import {{ toWebVTT, toSRT }} from {json.dumps(CAPTIONS_JS.as_uri())};
let input = "";
for await (const chunk of process.stdin) input += chunk;
const out = JSON.parse(input).map((commits) => [toWebVTT(commits), toSRT(commits)]);
process.stdout.write(JSON.stringify(out));
"""

VOCABULARY = [
    "the",
    "council",
    "will",
    "meet",
    "again",
    "and",
    "but",
    "because",
    "which",
    "bridge",
    "river",
    "Kubernetes",
    "Nguyen",
    "nice,",
    "however;",
    "well:",
    "ok.",
    "really?",
    "yes!",
    "end…",
    "«quoted»",
    "(aside)",
    "said.\u201d",
    "tokyo。",
    "東京都の天気は晴れです",
    "emoji\U0001f600",
    "a<b",
    "x&y",
    "-->",
    "supercalifragilisticexpialidociousandmorethanalinelongword",
    "—",
    "And",
    "SO",
]
SPACES = [" ", " ", " ", "  ", "\u00a0", "\t", "\u3000", "\u2009", "\n"]


def random_commits(seed: int) -> list[Commit]:
    """Commits as a streaming session might emit them: a few words each, pieces that continue a word, pauses,
    long runs, occasional times that go backwards or overlap."""
    rng = random.Random(seed)
    t = rng.uniform(0, 2)
    commits = []
    for _ in range(rng.randint(1, 40)):
        n = rng.randint(0, 6)
        text = "".join(rng.choice(SPACES) + rng.choice(VOCABULARY) for _ in range(n))
        if rng.random() < 0.15 and text:
            text = text.lstrip()  # a piece that continues the previous word
        start = t + (rng.choice([0, 0, 0.05, 0.3, 0.8, 2.5]) if rng.random() < 0.9 else -rng.uniform(0, 1))
        end = start + rng.choice([0.0, rng.uniform(0.05, 1.5), rng.uniform(1.5, 9)])
        commits.append(Commit(text, round(start, rng.choice([2, 3, 6])), round(end, rng.choice([2, 3, 6]))))
        t = max(t, end)
    return commits


def python_files(commits: list[Commit]) -> list[str]:
    cues = build_cues(commits)
    return [format_captions(cues, "vtt"), format_captions(cues, "srt")]


def node_files(cases: list[list[Commit]]) -> list[list[str]]:
    payload = [[{"text": c.text, "start": c.start_s, "end": c.end_s} for c in commits] for commits in cases]
    return run_node(RUNNER, payload, needed_for="web/captions.js")


def test_the_rules_file_sets_the_python_defaults() -> None:
    """CaptionConfig's defaults are the numbers in web/caption-rules.json (the page reads the same file)."""
    rules = json.loads(RULES_PATH.read_text(encoding="utf-8"))
    c = CaptionConfig()
    assert (c.max_line_chars, c.max_lines, c.min_duration_s, c.max_duration_s, c.pause_s) == (
        rules["max_line_chars"],
        rules["max_lines"],
        rules["min_duration_s"],
        rules["max_duration_s"],
        rules["pause_s"],
    )


def test_page_and_python_write_the_same_files() -> None:
    """A real talk's commits and 300 random commit lists give byte-identical WebVTT and SRT from both."""
    cases = [TALK] + [random_commits(seed) for seed in range(300)]
    got = node_files(cases)
    n_cues = 0
    for commits, (vtt, srt_text) in zip(cases, got, strict=True):
        want_vtt, want_srt = python_files(commits)
        assert vtt == want_vtt, commits
        assert srt_text == want_srt, commits
        n_cues += want_srt.count(" --> ")
    assert n_cues > 1000  # the cases really exercise the rule


def test_page_files_follow_the_cue_rule() -> None:
    """The page's cues are at most two lines of 42 characters and never overlap (what the old page rule broke:
    84-character single lines)."""
    vtt, _ = node_files([TALK])[0]
    blocks = [b.split("\n") for b in vtt.split("\n\n")[1:] if b.strip()]
    assert len(blocks) >= 4
    ends = []
    for index, times, *lines in blocks:
        assert index.isdigit() and 1 <= len(lines) <= 2 and all(len(line) <= 42 for line in lines), lines
        start, end = times.split(" --> ")
        ends.append((start, end))
    assert all(prev_end <= start for (_, prev_end), (start, _) in zip(ends, ends[1:]))
