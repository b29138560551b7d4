"""Decoder updates driven one stream at a time or batched across streams give the same tokens.

Equality is checked on the fp32 model: the default int8 decoder quantises each Linear's input with one scale
per tensor, so a batch's rows nudge each other's rounding (batched int8 is as good, not bit-identical; the
scheduler and benchmark measure its quality)."""

from __future__ import annotations

import numpy as np
import pytest

from engine.audio import SAMPLE_RATE
from engine.streaming.batch import decode_batch, merge_states, split_row
from engine.streaming.decoder import DecodeJob
from engine.streaming.policy import make_policy
from tests.speech import speech


@pytest.fixture(scope="module")
def backend(whisper_bundle_fp32):
    from engine.backend import make_backend

    return make_backend(whisper_bundle_fp32)


@pytest.fixture(scope="module")
def clips(audio_dir):
    """Three utterances of different lengths and languages, cut to different window lengths."""
    out = []
    for lang, idx, seconds in (("de", 0, 3.1), ("fr", 1, 4.6), ("en", 0, 2.2)):
        audio, _ = speech(lang, idx, audio_dir)
        out.append((lang, audio[: int(seconds * SAMPLE_RATE)]))
    return out


def _jobs(backend, clips, prefixes, policy_name="local-agreement", pad_s=0.0):
    jobs = []
    for (lang, audio), committed in zip(clips, prefixes):
        task = "transcribe" if lang == "en" else "translate"
        enc = backend.encode(np.concatenate([audio, np.zeros(int(pad_s * SAMPLE_RATE), np.float32)]))
        state = backend.new_state(enc)
        seq = backend.start_tokens(task, lang, []) + committed
        n_frames = int(len(audio) / SAMPLE_RATE / backend.frame_s)
        policy = make_policy(policy_name)
        jobs.append(
            DecodeJob(
                backend,
                state,
                sequence=seq,
                n_committed=len(committed),
                n_frames=n_frames,
                policy=policy,
                final=False,
                max_new_tokens=40,
                refill=True,
            )
        )
    return jobs


@pytest.mark.parametrize("policy_name,pad_s", [("local-agreement", 0.0), ("alignatt", 1.0)])
def test_batched_steps_equal_one_stream_at_a_time(backend, clips, policy_name, pad_s):
    """Three streams with different audio lengths and committed prefixes decode the same tokens batched as alone."""
    prefixes = [[], backend.text_tokens(" My family"), backend.text_tokens(" Good")]
    alone = [decode_batch(backend, [j])[0] for j in _jobs(backend, clips, prefixes, policy_name, pad_s)]
    jobs = _jobs(backend, clips, prefixes, policy_name, pad_s)
    together = decode_batch(backend, jobs)
    assert [r.tokens for r in together] == [r.tokens for r in alone]
    assert all(r.tokens for r in alone)
    for a, t in zip(alone, together):
        assert a.next_token == t.next_token
        assert abs(a.sum_logprob - t.sum_logprob) < 1e-2 * max(1, len(a.tokens))
    # every stream gets its own cache back: prefix + generated tokens fed, ready for the next update
    for job, r in zip(jobs, together):
        assert job.state.offset == len(job.sequence) + r.n_stepped
        assert job.state.left_pad is None and job.state.batch_size == 1


def test_merge_then_split_restores_each_cache(backend, clips):
    """Merging single-row caches of different lengths and splitting them back gives the original keys/values."""
    prefixes = [[], backend.text_tokens(" Hello everyone, today."), []]
    jobs = _jobs(backend, clips, prefixes)
    for j in jobs:
        j.prefill()
    batch = merge_states([j.state for j in jobs])
    assert batch.batch_size == 3 and batch.cross_valid is not None
    for row, j in enumerate(jobs):
        before = [k.clone() for k in j.state.self_k]
        split_row(batch, row, j.state)
        assert all(np.allclose(a.numpy(), b.numpy()) for a, b in zip(before, j.state.self_k))


def test_beam_last_update_scores_at_least_greedy_and_batches_beside_greedy_jobs(backend, clips):
    """A segment's last update with beam 5 ends at end-of-text with a hypothesis about as probable as greedy's
    (beam ranks and reports the length-normalised score including end-of-text, greedy's total leaves it out),
    keeps the job's own state at the prefix, and runs in one decode_batch call beside greedy jobs without
    changing them."""
    from engine.streaming.decoder import beam_search  # noqa: F401 (the path decode_batch takes for beam jobs)

    greedy = _jobs(backend, clips, [[], [], []], "alignatt", pad_s=1.0)
    beam = _jobs(backend, clips, [[], [], []], "alignatt", pad_s=1.0)
    for g, b in zip(greedy, beam):
        g.final = b.final = True
        b.beam_size = 5
    res_g = decode_batch(backend, greedy)
    mixed = decode_batch(backend, [beam[0], greedy[1], beam[2]])
    for rg, rb, job in zip(res_g[::2], mixed[::2], beam[::2]):
        assert rb.tokens and rb.next_token == backend.eot
        assert rb.sum_logprob / (len(rb.tokens) + 1) >= rg.sum_logprob / len(rg.tokens) - 0.1
        assert job.state.batch_size == 1 and job.state.offset == len(job.sequence)
    assert mixed[1].tokens == res_g[1].tokens  # the greedy job beside them is unaffected


@pytest.mark.parametrize("beam", [1, 5])
def test_a_banned_first_token_is_never_decoded_first(backend, clips, beam):
    """`banned_first` (how a last decode continues past a stutter loop: the loop's restart may not come first):
    greedy and beam search then open with another token and still decode on to end-of-text."""
    plain = _jobs(backend, clips[2:], [[]], "alignatt", pad_s=1.0)[0]
    plain.final, plain.beam_size = True, beam
    first = decode_batch(backend, [plain])[0].tokens[0]
    job = _jobs(backend, clips[2:], [[]], "alignatt", pad_s=1.0)[0]
    job.final, job.beam_size, job.banned_first = True, beam, [first]
    res = decode_batch(backend, [job])[0]
    assert res.tokens and res.tokens[0] != first
    assert res.next_token == backend.eot


@pytest.mark.parametrize("beam", [1, 5])
def test_banned_tokens_are_never_decoded(backend, clips, beam):
    """`banned` (how a last decode that wrote the speech out untranslated is decoded again: the spoken language's
    function words may not come anywhere): none of them is decoded, in greedy and in beam search, and the decode
    still runs on to end-of-text."""
    plain = _jobs(backend, clips[2:], [[]], "alignatt", pad_s=1.0)[0]
    plain.final, plain.beam_size = True, beam
    tokens = decode_batch(backend, [plain])[0].tokens
    banned = sorted(set(tokens[::2]))
    job = _jobs(backend, clips[2:], [[]], "alignatt", pad_s=1.0)[0]
    job.final, job.beam_size, job.banned = True, beam, banned
    res = decode_batch(backend, [job])[0]
    assert res.tokens and not set(res.tokens) & set(banned)
    assert res.next_token == backend.eot


def test_a_long_run_repeated_twice_is_a_loop():
    """Two copies of an 8+ token run in a row are cut to one (Whisper's whole-sentence loops); short runs need 3."""
    from engine.streaming.guards import repetition_cut

    sentence = list(range(100, 110))
    assert repetition_cut([1, 2] + sentence + sentence) == 2 + len(sentence)
    assert repetition_cut([1, 2, 7, 8, 7, 8]) is None  # "no, no" style short repeats twice are speech
    assert repetition_cut([1, 7, 8, 7, 8, 7, 8]) == 3


def test_reread_cut_drops_a_phrase_read_twice_from_the_same_audio():
    """'Good evening. Good evening.' whose copy attends the same frames is cut after the first copy; the same
    words heard again later (a speaker repeating himself) are kept."""
    from engine.streaming.guards import reread_cut

    content = lambda t: t != 0  # noqa: E731 (token 0 stands for punctuation)
    toks = [5, 6, 0, 5, 6, 0]
    assert reread_cut(toks, [14, 21, 21, 14, 22, 24], content) == 3
    assert reread_cut(toks, [14, 21, 21, 40, 48, 50], content) is None
    assert reread_cut([0, 0], [1, 1], content) is None  # punctuation only


def test_reread_spans_find_a_sentence_read_again_from_the_same_audio():
    """A sentence whose words are the committed tokens at the same frames is a re-read; the same words at later
    frames (said again) and a sentence sharing one word are not; '5.2' does not split a sentence."""
    from engine.streaming.guards import reread_spans

    text = {1: b" Good", 2: b" morning", 3: b".", 4: b" Today", 5: b" we", 6: b" 5", 7: b"2"}
    tb, content = text.__getitem__, (lambda t: t != 3)
    prior = [(1, 12), (2, 21)]
    assert reread_spans([1, 2, 3, 4, 5, 3], [17, 22, 30, 60, 66, 70], tb, content, prior) == [(0, 3)]
    assert reread_spans([1, 2, 3, 4, 5, 3], [80, 90, 95, 100, 110, 115], tb, content, prior) == []
    assert reread_spans([4, 6, 3, 7, 3], [10, 20, 25, 30, 35], tb, content) == []
    # a sentence read inside a carried context (its text given, frames before `before`) is a re-read too
    assert reread_spans([1, 2, 3, 4, 5, 3], [17, 22, 30, 60, 66, 70], tb, content, (), 50) == [(0, 3)]
    assert reread_spans([1, 2, 3, 4, 5, 3], [17, 22, 30, 60, 66, 70], tb, content, (), 10) == []


@pytest.mark.parametrize("policy_name,pad_s", [("local-agreement", 0.0), ("alignatt", 1.0)])
def test_draft_tokens_are_verified_not_trusted(backend, clips, policy_name, pad_s):
    """A job given a draft (the last update's hypothesis) decodes the same tokens as without one, whether the
    draft is right, right only at its start, wrong or too long; a right draft saves a forward pass per token."""
    prefixes = [[], backend.text_tokens(" My family"), []]
    calls = {"n": 0}
    step = backend.step_with_alignment

    def counting(tokens, state):
        calls["n"] += 1
        return step(tokens, state)

    backend.step_with_alignment = counting
    try:
        plain, plain_calls = [], []
        for job in _jobs(backend, clips, prefixes, policy_name, pad_s):
            calls["n"] = 0
            plain.append(decode_batch(backend, [job])[0])
            plain_calls.append(calls["n"])
        assert all(len(r.tokens) >= 3 for r in plain)
        for name, make in (
            ("right", lambda toks: list(toks)),
            ("right start", lambda toks: list(toks[:2]) + backend.text_tokens(" zebra umbrella")),
            ("wrong", lambda toks: backend.text_tokens(" zebra umbrella")),
            ("too long", lambda toks: list(toks) + backend.text_tokens(" and more") * 30),
        ):
            for job, ref, n_plain in zip(_jobs(backend, clips, prefixes, policy_name, pad_s), plain, plain_calls):
                job.draft = make(ref.tokens)
                calls["n"] = 0
                res = decode_batch(backend, [job])[0]
                assert res.tokens == ref.tokens, name
                assert res.next_token == ref.next_token, name
                assert job.state.offset == len(job.sequence) + res.n_stepped, name
                if name == "right":  # the draft's tokens ride in the prefix's forward pass
                    assert calls["n"] <= n_plain - len(ref.tokens) + 1, (calls, n_plain)
    finally:
        backend.step_with_alignment = step
