"""Commit policies: pure functions over token ids and attention arrays."""

from __future__ import annotations

import numpy as np

from engine.streaming.policy import AlignAtt, Hypothesis, LocalAgreement, attended_frame, make_policy


def hyp(tokens, attention=None, n_frames=100, final=False) -> Hypothesis:
    return Hypothesis(tuple(tokens), attention, n_frames, final)


def test_local_agreement_commits_common_prefix_of_two():
    """LocalAgreement-2 commits nothing on the first hypothesis, then the prefix two hypotheses share."""
    p = LocalAgreement(n=2)
    assert p.stable_count(hyp([1, 2, 3])) == 0
    assert p.stable_count(hyp([1, 2, 4, 5])) == 2
    p.committed(2)
    assert p.stable_count(hyp([4, 5, 6])) == 2  # stored [4, 5] (relative) agrees with the new one


def test_local_agreement_final_commits_everything():
    """A segment's final hypothesis is committed whole."""
    p = make_policy("local-agreement")
    assert p.stable_count(hyp([7, 8, 9], final=True)) == 3


def test_alignatt_stops_at_tokens_attending_to_the_audio_end():
    """AlignAtt keeps tokens looking at early frames and stops at the first one looking at the last frames."""
    n = 100
    att = np.zeros((3, 4, n))
    for i, frame in enumerate([10, 50, 95]):
        att[i, :, frame] = 1.0
    p = AlignAtt(frame_threshold=20)
    assert p.stable_count(hyp([1, 2, 3], att, n)) == 2
    assert p.should_stop(att[2], n) and not p.should_stop(att[1], n)


def test_attended_frame_ignores_one_head_on_an_attention_sink():
    """The median of per-head peaks is not dragged to a pause by one outlier head."""
    att = np.zeros((5, 100))
    att[:4, 30] = 1.0
    att[4, 90] = 5.0
    assert attended_frame(att, 100) == 30


def test_a_segments_first_token_waits_while_most_heads_park_on_the_padding():
    """On a segment's first token most alignment heads park on a sink just past the audio's end while a few read
    the speech onset; AlignAtt stops there, so the segment's first word waits until the heads find the speech.
    That wait is a guard: placing the token by the heads on the audio instead (committed, or only shown) lost 0.5
    to 3.2 BLEU on the unseen sets (benchmarks/README.md), a first word committed early steering the rest."""
    n, pad = 100, 50
    first = np.zeros((8, n + pad))
    first[[0, 1, 3, 4, 5], n + 12] = 1.0  # the sink, 12 frames into the appended silence
    first[[2, 6, 7], 15] = 1.0  # the speech onset
    p = AlignAtt(frame_threshold=20)
    p.begin_update()
    assert p.should_stop(first, n)
    assert p.stable_count(hyp([1], first[None], n)) == 0
    found = first.copy()
    found[[0, 1]] = 0.0
    found[[0, 1], 15] = 1.0  # five heads on the onset
    p.begin_update()
    assert not p.should_stop(found, n)
    assert p.stable_count(hyp([1], found[None], n)) == 1


def test_alignatt_stops_when_attention_jumps_back_to_the_start():
    """A token attending 2 s before the furthest frame of the update (starting over) ends a non-final update."""
    p = AlignAtt(frame_threshold=20, rewind_frames=100)
    n = 400
    row = lambda frame: np.eye(n)[frame][None].repeat(3, 0)  # noqa: E731 - (heads, frames) peaked at `frame`
    p.begin_update()
    assert not p.should_stop(row(150), n)
    assert not p.should_stop(row(240), n)
    assert not p.should_stop(row(180), n)  # a short jump back: word reordering
    assert not p.should_stop(row(20), n, content=False)  # punctuation parked on a sink frame
    assert p.should_stop(row(20), n)
    p.begin_update()
    assert not p.should_stop(row(20), n)  # a new update starts with no frontier


def test_alignatt_never_cuts_a_segments_last_update():
    """In a segment's last update attention stops nothing: a stop there would lose the rest of the speech
    (heads parked on the appended silence cut "8 a.m, but we should be there earlier" after "a.")."""
    p = AlignAtt(frame_threshold=20, rewind_frames=100)
    n = 400
    row = lambda frame: np.eye(n + 50)[frame][None].repeat(3, 0)  # noqa: E731
    p.begin_update()
    assert not p.should_stop(row(240), n, final=True)
    assert not p.should_stop(row(20), n, final=True)  # jump back
    assert not p.should_stop(row(430), n, final=True)  # into the padding


def test_alignatt_confirm_first_waits_for_two_agreeing_updates():
    """With confirm_first a segment's first words are committed only once two updates agree on them."""
    n = 100
    att = np.zeros((3, 2, n))
    att[:, :, 10] = 1.0
    p = AlignAtt(confirm_first=True)
    assert p.stable_count(hyp([1, 2, 3], att, n)) == 0
    assert p.stable_count(hyp([1, 2, 4], att, n)) == 2
    p.committed(2)
    assert p.stable_count(hyp([4, 5, 6], att, n)) == 3  # later words are not held back
    p.reset()
    assert p.stable_count(hyp([7, 8], att[:2], n)) == 0


def _early_attention(n_tokens: int, n: int = 100) -> np.ndarray:
    att = np.zeros((n_tokens, 4, n))
    att[:, :, 5] = 1.0  # every token looks at early audio: AlignAtt alone would commit all of them
    return att


def test_alignatt_keeps_unsure_tokens_partial():
    """With min_prob, the first token decoded below that probability and everything after it stay partial."""
    p = AlignAtt(min_prob=0.3)
    lps = tuple(np.log([0.9, 0.8, 0.1, 0.95]))
    h = Hypothesis((1, 2, 3, 4), _early_attention(4), 100, False, lps)
    assert p.stable_count(h) == 2
    assert AlignAtt().stable_count(h) == 4  # without the rule: attention decides alone


def test_alignatt_unsure_tokens_commit_once_an_update_agrees():
    """agree_unsure: an unsure token becomes stable when the previous update decoded the same token there."""
    p = AlignAtt(min_prob=0.5, agree_unsure=True)
    low = tuple(np.log([0.9, 0.2, 0.9]))
    assert p.stable_count(Hypothesis((1, 2, 3), _early_attention(3), 100, False, low)) == 1
    p.committed(1)
    # relative to the committed prefix the previous hypothesis is (2, 3): token 2 agrees now
    assert p.stable_count(Hypothesis((2, 3, 4), _early_attention(3), 100, False, tuple(np.log([0.2, 0.9, 0.1])))) == 2


def test_final_hypothesis_ignores_confidence():
    """A segment's last update commits everything, sure or not: nothing said may be held back forever."""
    p = AlignAtt(min_prob=0.9)
    h = Hypothesis((1, 2), None, 100, True, tuple(np.log([0.1, 0.1])))
    assert p.stable_count(h) == 2


def test_a_sessions_policy_and_mode_come_from_its_config_once():
    """policy_for / mode_for build the objects the session asks, with the config's settings."""
    from engine.streaming.config import SessionConfig
    from engine.streaming.modes import Exact, Incremental, Redecode, mode_for
    from engine.streaming.policy import policy_for

    aa = policy_for(SessionConfig(task="transcribe", frame_threshold=15, min_prob=0.2))
    assert isinstance(aa, AlignAtt) and (aa.frame_threshold, aa.min_prob, aa.held_words) == (15, 0.2, 2)
    la = policy_for(SessionConfig(policy="local-agreement", agreement_n=3))
    assert isinstance(la, LocalAgreement) and (la.n, la.held_words) == (3, 0)
    modes = [mode_for(None, SessionConfig(mode=m)) for m in ("incremental", "exact", "redecode")]  # type: ignore[arg-type]
    assert [type(m) for m in modes] == [Incremental, Exact, Redecode]
    assert [m.refills_every_update for m in modes] == [False, True, True]
