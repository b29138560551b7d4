"""engine/streaming/committer.py on made-up token pieces (no model): what a commit may stop at, UTF-8, spacing."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.events import Commit, Partial
from engine.streaming.committer import Committer
from engine.streaming.config import SessionConfig
from engine.streaming.policy import AlignAtt, LocalAgreement
from engine.streaming.segment import Segment, Update

PIECES = [
    b" The",
    b" city",
    b" of",
    b" Ham",
    b"burg",
    b",",
    b" today",
    b".",
    b" Stra",
    "ß".encode()[:1],
    "ß".encode()[1:],
    b"e",
]
EOT = len(PIECES)


@dataclass
class Pieces:
    """The part of a Backend the committer uses."""

    eot: int = EOT
    frame_s: float = 0.02

    def token_bytes(self, token: int) -> bytes:
        return PIECES[token] if token < len(PIECES) else b""


def committer(policy=None, **config) -> Committer:
    return Committer(Pieces(), SessionConfig(**config), policy or LocalAgreement())  # type: ignore[arg-type]


def update(seg: Segment, final: bool = False) -> Update:
    return Update(seg, np.zeros(16000 * 3, np.float32), final=final)


def test_commits_stop_at_word_ends():
    """A commit never ends inside a word: "Ham" waits while "burg" is not stable."""
    c = committer()
    tokens = [0, 1, 2, 3, 4, 5, 6, 7]
    assert c.stable_end(tokens, 4, None) == 3  # tokens[4] "burg" continues "Ham"
    assert c.stable_end(tokens, 5, None) == 3  # and the comma belongs to "Hamburg,"
    assert c.stable_end(tokens, 6, None) == 6
    assert c.stable_end(tokens, 8, EOT) == 8  # end-of-text ends the word
    assert c.stable_end(tokens, 8, None) == 6  # the stop is unknown: the last word may go on


def test_commit_units_and_held_words():
    """commit_unit="clause" stops after a comma, "sentence" after a stop; AlignAtt's held words stay partial."""
    tokens = [0, 1, 2, 3, 4, 5, 6, 7, 0]
    assert committer(commit_unit="clause").stable_end(tokens, 8, None) == 8
    assert committer(commit_unit="clause").stable_end(tokens, 7, None) == 6
    assert committer(commit_unit="sentence").stable_end(tokens, 7, None) == 0
    assert committer(policy=AlignAtt(held_words=1)).stable_end(tokens, 8, None) == 6
    assert committer(policy=AlignAtt(held_words=2)).stable_end(tokens, 8, None) == 3


def test_a_split_character_waits_for_its_last_byte_and_segments_are_spaced():
    """Committed bytes are shown only as whole characters; a new segment's first words get a space."""
    c = committer()
    seg = Segment(start_s=0.0, n_samples=16000 * 3)
    commit, _ = c.commit(seg, [0, 8, 9], None, update(seg))
    assert commit == Commit(text="The Stra", start_s=0.0, end_s=3.0)
    assert seg.pending_bytes == "ß".encode()[:1]
    assert c.show([10, 11], seg, update(seg)) == Partial(text="ße", start_s=3.0, end_s=3.0)
    commit, _ = c.commit(seg, [10, 11], None, update(seg, final=True))
    assert commit is not None and commit.text == "ße" and c.text_out == "The Straße"
    nxt = Segment(start_s=4.0, n_samples=16000 * 3)
    commit, end_s = c.commit(nxt, [1], None, update(nxt, final=True))
    assert commit is not None and commit.text == " city" and end_s == 7.0
    # a segment that goes on with the carried sentence (SessionConfig.context_s) opens with its comma: no space
    last = Segment(start_s=8.0, n_samples=16000 * 3)
    commit, _ = c.commit(last, [5, 6], None, update(last, final=True))
    assert commit is not None and commit.text == ", today" and c.text_out == "The Straße city, today"


def test_a_sentence_opened_in_lower_case_after_a_stop_is_shown_and_committed_with_its_capital():
    """Whisper may open a segment's sentence in lower case after the last one's full stop ("August. drivers"):
    the partial and the commit show the capital; the decoder's tokens stay as they are."""
    c = committer()
    seg = Segment(start_s=0.0, n_samples=16000 * 3)
    c.commit(seg, [0, 6, 7], None, update(seg, final=True))
    assert c.text_out == "The today."
    nxt = Segment(start_s=4.0, n_samples=16000 * 3)
    assert c.show([1, 2], nxt, update(nxt)) == Partial(text=" City of", start_s=4.0, end_s=7.0)
    commit, _ = c.commit(nxt, [1], None, update(nxt))
    assert commit is not None and commit.text == " City" and nxt.sequence[-1] == 1
    assert c.show([2], nxt, update(nxt)) == Partial(text=" of", start_s=7.0, end_s=7.0)
