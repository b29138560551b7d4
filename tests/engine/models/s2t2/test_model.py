"""The Speech2Text2 decoder on the explicit DecoderState: caching, rewind, reorder, left padding, alignment."""

from __future__ import annotations

import pytest
import torch

from engine.models.s2t2.model import S2T2, S2T2Config
from engine.models.s2t2.wav2vec2 import Wav2Vec2Config

VOCAB = 40
PAD = 1


@pytest.fixture(scope="module")
def model() -> S2T2:
    """A tiny random model (no transformers needed): encoder 32 wide, decoder 24 wide (projected)."""
    torch.manual_seed(0)
    enc = Wav2Vec2Config(
        conv_dim=(8, 8),
        conv_kernel=(10, 3),
        conv_stride=(5, 4),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=32,
        num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=4,
    )
    dec = S2T2Config(
        vocab_size=VOCAB,
        d_model=24,
        decoder_layers=3,
        decoder_attention_heads=4,
        decoder_ffn_dim=32,
        max_target_positions=32,
        pad_token_id=PAD,
    )
    m = S2T2(enc, dec).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.3)
    return m


@pytest.fixture(scope="module")
def audio_out(model: S2T2) -> torch.Tensor:
    with torch.inference_mode():
        return model.encode(torch.randn(1, 2000))[0]  # (1, S, 24)


def _tokens(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(3, VOCAB, (1, n), generator=g)
    t[0, 0] = 2
    return t


@torch.inference_mode()
def test_incremental_decoding_equals_full_recomputation(model: S2T2, audio_out: torch.Tensor) -> None:
    """Feeding tokens one at a time through the cache gives, at every step, the logits of one full pass."""
    tokens = _tokens(12)
    full = model.step(tokens, model.new_state(audio_out))
    state = model.new_state(audio_out)
    steps = [model.step(tokens[:, :4], state)]  # a prompt of several tokens, then single tokens
    for i in range(4, tokens.shape[1]):
        steps.append(model.step(tokens[:, i : i + 1], state))
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-5, atol=1e-5)
    assert state.offset == 12 and state.self_k[0].shape[2] == 12


@torch.inference_mode()
def test_rewind_then_extend_equals_fresh_decode(model: S2T2, audio_out: torch.Tensor) -> None:
    """After rewinding, new tokens get the positions of a fresh decode of the same sequence (no stale offset)."""
    a, b = _tokens(10, 1), _tokens(10, 2)
    state = model.new_state(audio_out)
    model.step(a, state)
    state.rewind(4)  # keep a[:, :6]
    got = model.step(b[:, 6:], state)
    fresh = model.step(torch.cat([a[:, :6], b[:, 6:]], dim=1), model.new_state(audio_out))[:, 6:]
    torch.testing.assert_close(got, fresh, rtol=1e-5, atol=1e-5)
    state.reset()
    torch.testing.assert_close(model.step(b, state), model.step(b, model.new_state(audio_out)), rtol=0, atol=0)


@torch.inference_mode()
def test_positions_follow_the_reference_numbering(model: S2T2, audio_out: torch.Tensor) -> None:
    """Real tokens take rows pad+1+offset onwards; pad tokens take the zero row and are not counted."""
    state = model.new_state(audio_out)
    tokens = torch.tensor([[2, 5, PAD, 7]])
    assert model.positions(tokens, state).tolist() == [[PAD + 1, PAD + 2, PAD, PAD + 3]]
    model.step(tokens, state)
    assert model.positions(torch.tensor([[9, 9]]), state).tolist() == [[PAD + 5, PAD + 6]]
    assert not model.decoder.embed_positions[PAD].any()


@torch.inference_mode()
def test_beam_reorder_moves_cache_rows(model: S2T2, audio_out: torch.Tensor) -> None:
    """After repeat + reorder, each row continues exactly like a single-row decode of its own history."""
    x, y = _tokens(5, 3), _tokens(5, 4)
    state = model.new_state(audio_out)
    model.step(x[:, :1], state)
    state.repeat(2)
    model.step(torch.cat([x[:, 1:], y[:, 1:]]), state)  # row 0 follows x, row 1 follows y
    state.reorder(torch.tensor([1, 1, 0]))
    got = model.step(torch.tensor([[11], [12], [13]]), state)
    for row, (hist, nxt) in enumerate([(y, 11), (y, 12), (x, 13)]):
        seq = torch.cat([x[:, :1], hist[:, 1:], torch.tensor([[nxt]])], dim=1)
        ref = model.step(seq, model.new_state(audio_out))[:, -1]
        torch.testing.assert_close(got[row, -1], ref[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("filler", [PAD, 5])
@torch.inference_mode()
def test_left_padded_row_equals_unpadded_decode(model: S2T2, audio_out: torch.Tensor, filler: int) -> None:
    """A row carrying left padding in a batch decodes exactly like the same sequence alone, whatever fills it."""
    long, short = _tokens(7, 5), _tokens(4, 6)
    state = model.new_state(audio_out)
    state.left_pad = torch.tensor([0, 3])
    batch = torch.cat([long, torch.cat([torch.full((1, 3), filler), short], dim=1)])
    got = model.step(batch, state)
    alone = model.step(short, model.new_state(audio_out))
    torch.testing.assert_close(got[1, 3:], alone[0], rtol=1e-5, atol=1e-5)
    nxt = model.step(torch.tensor([[9], [9]]), state)
    ref = model.step(torch.cat([short, torch.tensor([[9]])], dim=1), model.new_state(audio_out))[:, -1]
    torch.testing.assert_close(nxt[1, -1], ref[0], rtol=1e-5, atol=1e-5)


@torch.inference_mode()
def test_alignment_is_a_distribution_over_real_frames(model: S2T2, audio_out: torch.Tensor) -> None:
    """step_with_alignment returns one head-averaged map per token that sums to 1 and ignores masked frames."""
    n = audio_out.shape[1]
    valid = torch.zeros(1, n, dtype=torch.bool)
    valid[:, : n - 5] = True
    state = model.new_state(audio_out, valid)
    logits, att = model.step_with_alignment(_tokens(3), state)
    assert att.shape == (1, 1, 3, n)
    torch.testing.assert_close(att.sum(-1), torch.ones(1, 1, 3))
    assert float(att[..., n - 5 :].max()) == 0.0
    torch.testing.assert_close(logits, model.step(_tokens(3), model.new_state(audio_out, valid)))


@torch.inference_mode()
def test_context_limit_is_enforced(model: S2T2, audio_out: torch.Tensor) -> None:
    """More tokens than max_target_positions is an error, not a silent wrap of the position table."""
    with pytest.raises(ValueError, match="decoder context of 32 tokens"):
        model.step(_tokens(33), model.new_state(audio_out))
