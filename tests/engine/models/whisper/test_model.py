"""The Whisper network over an explicit DecoderState, on a tiny seeded random model: whatever the cache does
(incremental steps, chunks, rewinds, beam reordering, left padding, masked audio) must give the logits of a
full recomputation from scratch."""

from __future__ import annotations

import pytest
import torch

from engine.kv_cache import DecoderState
from engine.models.whisper.decoding import DecodingOptions, decode
from engine.models.whisper.load import WhisperBundle
from engine.models.whisper.model import Whisper
from tests.tiny_models import TINY_WHISPER as TINY

# Tight enough to catch a position off by one or a stale cache entry (those move logits by > 1e-2 here), loose
# enough for fp32 summation-order differences between one pass over T tokens and T passes over one.
TOL = dict(rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def encoder_out(tiny_whisper: Whisper) -> torch.Tensor:
    """Encoder output of 0.6 s of random features, (1, 30, 32)."""
    torch.manual_seed(7)
    with torch.no_grad():
        return tiny_whisper.encode(torch.randn(1, 80, 60))


def _tokens(n: int, seed: int = 0) -> torch.Tensor:
    """A Whisper prompt followed by random text tokens, (1, n)."""
    g = torch.Generator().manual_seed(seed)
    prompt = torch.tensor([[50258, 50261, 50358, 50363]])  # sot, de, translate, notimestamps
    return torch.cat([prompt, torch.randint(0, 50257, (1, n - 4), generator=g)], dim=1)[:, :n]


def _full(model: Whisper, encoder_out: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Logits of one pass over `tokens` from an empty cache: the reference."""
    return model.step(tokens, model.new_state(encoder_out))


@torch.no_grad()
def test_incremental_decoding_equals_full_recomputation_at_every_step(
    tiny_whisper: Whisper, encoder_out: torch.Tensor
) -> None:
    """Feeding one token at a time over the cache gives, at every step, the logits of recomputing the prefix."""
    tokens = _tokens(40)
    state = tiny_whisper.new_state(encoder_out)
    for t in range(tokens.shape[1]):
        logits = tiny_whisper.step(tokens[:, t : t + 1], state)
        assert state.offset == t + 1
        reference = _full(tiny_whisper, encoder_out, tokens[:, : t + 1])[:, -1:]
        torch.testing.assert_close(logits, reference, **TOL)


@torch.no_grad()
def test_chunked_feeding_equals_one_pass(tiny_whisper: Whisper, encoder_out: torch.Tensor) -> None:
    """Feeding the tokens in uneven chunks (a prompt, single tokens, bursts) gives one pass's logits everywhere."""
    tokens = _tokens(40, seed=1)
    state = tiny_whisper.new_state(encoder_out)
    pieces, i = [], 0
    for size in (4, 1, 1, 7, 3, 1, 12, 11):
        pieces.append(tiny_whisper.step(tokens[:, i : i + size], state))
        i += size
    assert i == 40 and state.offset == 40
    torch.testing.assert_close(torch.cat(pieces, dim=1), _full(tiny_whisper, encoder_out, tokens), **TOL)


@torch.no_grad()
def test_positions_matter(tiny_whisper: Whisper, encoder_out: torch.Tensor) -> None:
    """Guard for the tests above: the same token at another position gives other logits (positions are used)."""
    state = tiny_whisper.new_state(encoder_out)
    tiny_whisper.step(_tokens(10), state)
    a = tiny_whisper.step(torch.tensor([[50258]]), state)
    b = _full(tiny_whisper, encoder_out, torch.tensor([[50258]]))
    assert (a - b).abs().max() > 1e-2


@torch.no_grad()
def test_rewind_then_reextend_equals_fresh_decode(tiny_whisper: Whisper, encoder_out: torch.Tensor) -> None:
    """Decoding 30 tokens, rewinding 12 and feeding 9 others gives the logits of decoding the 27 from scratch."""
    first, other = _tokens(30, seed=2), _tokens(30, seed=3)
    state = tiny_whisper.new_state(encoder_out)
    tiny_whisper.step(first[:, :20], state)
    tiny_whisper.step(first[:, 20:30], state)
    state.rewind(12)
    assert state.offset == 18
    new = other[:, 4:13]
    logits = torch.cat(
        [
            tiny_whisper.step(new[:, :5], state),
            tiny_whisper.step(new[:, 5:6], state),
            tiny_whisper.step(new[:, 6:], state),
        ],
        1,
    )
    fresh = _full(tiny_whisper, encoder_out, torch.cat([first[:, :18], new], dim=1))[:, 18:]
    torch.testing.assert_close(logits, fresh, **TOL)


@torch.no_grad()
def test_reset_then_decode_equals_fresh_state(tiny_whisper: Whisper, encoder_out: torch.Tensor) -> None:
    """A reset state decodes exactly like a new one over the same audio."""
    state = tiny_whisper.new_state(encoder_out)
    tiny_whisper.step(_tokens(25, seed=4), state)
    state.reset()
    tokens = _tokens(12, seed=5)
    torch.testing.assert_close(tiny_whisper.step(tokens, state), _full(tiny_whisper, encoder_out, tokens), **TOL)


@torch.no_grad()
def test_set_audio_keeps_the_token_cache(tiny_whisper: Whisper, encoder_out: torch.Tensor) -> None:
    """After set_audio the next step attends to the new audio: it equals a state built on the new audio
    whose token cache was copied over, and differs from the old audio's result."""
    tokens = _tokens(10, seed=6)
    other_audio = tiny_whisper.encode(torch.randn(1, 80, 80, generator=torch.Generator().manual_seed(9)))
    state = tiny_whisper.new_state(encoder_out)
    tiny_whisper.step(tokens, state)
    expected = state.clone()
    tiny_whisper.set_audio(expected, other_audio)
    old = tiny_whisper.step(torch.tensor([[11]]), state.clone())
    tiny_whisper.set_audio(state, other_audio)
    assert state.offset == 10 and state.cross_k[0].shape[2] == 40
    new = tiny_whisper.step(torch.tensor([[11]]), state)
    torch.testing.assert_close(new, tiny_whisper.step(torch.tensor([[11]]), expected), rtol=0, atol=0)
    assert (new - old).abs().max() > 1e-2


@torch.no_grad()
def test_alignment_step_returns_the_same_logits_and_normalised_heads(
    tiny_whisper: Whisper, encoder_out: torch.Tensor
) -> None:
    """step_with_alignment gives step()'s logits plus (B, heads, T, S) cross-attention rows that sum to 1."""
    tokens = _tokens(8, seed=7)
    logits, attn = tiny_whisper.step_with_alignment(tokens, tiny_whisper.new_state(encoder_out))
    torch.testing.assert_close(logits, _full(tiny_whisper, encoder_out, tokens), **TOL)
    assert attn.shape == (1, len(TINY.alignment_heads), 8, encoder_out.shape[1])
    torch.testing.assert_close(attn.sum(-1), torch.ones(1, 2, 8))


@torch.no_grad()
def test_left_padded_batched_rows_equal_unbatched_rows(tiny_whisper: Whisper, encoder_out: torch.Tensor) -> None:
    """Three streams with prompts of 5, 11 and 8 tokens share a left-padded batch; every row's logits, for the
    prompt and for six more steps, equal that stream decoded alone."""
    lengths = (5, 11, 8)
    seqs = [_tokens(n + 6, seed=10 + i) for i, n in enumerate(lengths)]
    width = max(lengths)
    pad = torch.tensor([width - n for n in lengths])
    batch = torch.stack(
        [torch.cat([torch.zeros(int(p), dtype=torch.long), s[0, :n]]) for p, s, n in zip(pad, seqs, lengths)]
    )
    state = tiny_whisper.new_state(encoder_out)
    state.left_pad = pad
    prompt_logits = tiny_whisper.step(batch, state)
    steps = [
        tiny_whisper.step(torch.stack([s[0, n + j : n + j + 1] for s, n in zip(seqs, lengths)]), state)
        for j in range(6)
    ]
    for row, (s, n) in enumerate(zip(seqs, lengths)):
        alone = _full(tiny_whisper, encoder_out, s)
        torch.testing.assert_close(prompt_logits[row, int(pad[row]) :], alone[0, :n], **TOL)
        torch.testing.assert_close(torch.cat([x[row] for x in steps]), alone[0, n:], **TOL)


@torch.no_grad()
def test_masked_audio_frames_equal_unpadded_audio(tiny_whisper: Whisper) -> None:
    """Encoder output padded with garbage frames and masked by `valid` decodes like the unpadded output."""
    g = torch.Generator().manual_seed(11)
    short = torch.randn(1, 18, 32, generator=g)
    long = torch.randn(1, 30, 32, generator=g)
    padded = torch.cat([short, 50 * torch.randn(1, 12, 32, generator=g)], dim=1)
    both = torch.cat([padded, long])
    valid = torch.ones(2, 30, dtype=torch.bool)
    valid[0, 18:] = False
    tokens = _tokens(9, seed=12).repeat(2, 1)
    state = tiny_whisper.new_state(both, valid)
    logits = tiny_whisper.step(tokens[:, :5], state)
    logits = torch.cat([logits, tiny_whisper.step(tokens[:, 5:], state)], dim=1)
    torch.testing.assert_close(logits[0], _full(tiny_whisper, short, tokens[:1])[0], **TOL)
    torch.testing.assert_close(logits[1], _full(tiny_whisper, long, tokens[:1])[0], **TOL)


@torch.no_grad()
def test_decoder_context_overflow_raises(tiny_whisper: Whisper, encoder_out: torch.Tensor) -> None:
    """Stepping past n_text_ctx raises ValueError and leaves the cache as it was."""
    state = tiny_whisper.new_state(encoder_out)
    tiny_whisper.step(_tokens(60), state)
    with pytest.raises(ValueError, match="context"):
        tiny_whisper.step(_tokens(5), state)
    assert state.offset == 60 and state.self_k[0].shape[2] == 60


@torch.no_grad()
def test_encoder_accepts_short_windows_and_refuses_too_long_ones(tiny_whisper: Whisper) -> None:
    """An unpadded window shorter than the context encodes to frames // 2 outputs; a longer one raises."""
    assert tiny_whisper.encode(torch.randn(1, 80, 24)).shape == (1, 12, 32)
    with pytest.raises(ValueError, match="exceed"):
        tiny_whisper.encode(torch.randn(1, 80, 2 * TINY.n_audio_ctx + 2))


# -- decoding loops over the cache ---------------------------------------------------------------------------
@pytest.mark.parametrize("timestamps", [False, True])
def test_greedy_with_cache_equals_cache_free_greedy(
    tiny_whisper_bundle: WhisperBundle, encoder_out: torch.Tensor, timestamps: bool
) -> None:
    """Greedy decoding over the cache picks the same tokens, with the same score, as recomputing every step."""
    base = dict(task="translate", language="de", max_new_tokens=20, timestamps=timestamps)
    cached = decode(tiny_whisper_bundle, encoder_out, DecodingOptions(**base))
    free = decode(tiny_whisper_bundle, encoder_out, DecodingOptions(**base, use_cache=False))
    assert len(cached.tokens) == 20 and cached.tokens == free.tokens
    assert cached.avg_logprob == pytest.approx(free.avg_logprob, abs=1e-4)


@pytest.mark.parametrize("beam_size,patience,timestamps", [(4, 1.0, False), (3, 2.0, True)])
def test_beam_search_with_cache_reordering_equals_cache_free_beam_search(
    tiny_whisper_bundle: WhisperBundle,
    encoder_out: torch.Tensor,
    monkeypatch: pytest.MonkeyPatch,
    beam_size: int,
    patience: float,
    timestamps: bool,
) -> None:
    """Beam search that reorders the cache rows finds the hypothesis, and score, of a cache-free beam search;
    the reordering really happened (beams were dropped and duplicated)."""
    reorders: list[list[int]] = []
    original = DecoderState.reorder

    def spy(self: DecoderState, indices: torch.Tensor) -> None:
        reorders.append(indices.tolist())
        original(self, indices)

    monkeypatch.setattr(DecoderState, "reorder", spy)
    base = dict(
        task="transcribe",
        language="en",
        beam_size=beam_size,
        patience=patience,
        max_new_tokens=16,
        timestamps=timestamps,
    )
    cached = decode(tiny_whisper_bundle, encoder_out, DecodingOptions(**base))
    n_cached_reorders = len(reorders)
    free = decode(tiny_whisper_bundle, encoder_out, DecodingOptions(**base, use_cache=False))
    assert cached.tokens == free.tokens
    assert cached.avg_logprob == pytest.approx(free.avg_logprob, abs=1e-4)
    assert len(cached.tokens) > 0
    permuting = [r for r in reorders[1:n_cached_reorders] if r != list(range(len(r)))]  # [0] is repeat()
    assert permuting, "the beams never swapped rows: this test would not catch a broken reorder"
