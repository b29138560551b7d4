"""DecoderState on its own: the cache and the offset change together, through methods, for every edit."""

from __future__ import annotations

import pytest
import torch

from engine.kv_cache import DecoderState

N_LAYERS, B, H, DH = 3, 2, 4, 8


def _kv(batch: int, n: int, start: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys/values whose value at token t is start + t, so the tests can see which tokens a cache holds."""
    k = (start + torch.arange(n, dtype=torch.float32)).view(1, 1, n, 1).expand(batch, H, n, DH).clone()
    k += torch.arange(batch, dtype=torch.float32).view(batch, 1, 1, 1) * 1000  # row r adds 1000 * r
    return k, -k


def _extend(state: DecoderState, n: int, batch: int = B) -> None:
    """What the decoder does per step: every layer appends n tokens, then the offset advances once."""
    for layer in range(state.n_layers):
        state.extend_layer(layer, *_kv(batch, n, start=state.offset))
    state.advance(n)


def _token_values(state: DecoderState, layer: int = 0, row: int = 0) -> list[float]:
    k = state.self_k[layer]
    return [] if k is None else (k[row, 0, :, 0] - 1000 * row).tolist()


def _state_with_cross(batch: int = 1, frames: int = 6) -> DecoderState:
    state = DecoderState(n_layers=N_LAYERS)
    cross = [torch.randn(batch, H, frames, DH) for _ in range(N_LAYERS)]
    state.set_cross(cross, [c.clone() for c in cross])
    return state


def test_fresh_state_is_empty() -> None:
    """A new state has no cached tokens, offset 0 and one row."""
    state = DecoderState(n_layers=N_LAYERS)
    assert state.offset == 0
    assert state.self_k == [None] * N_LAYERS and state.self_v == [None] * N_LAYERS
    assert state.batch_size == 1
    assert state.positions(3).tolist() == [[0, 1, 2]]


def test_extending_advances_offset_with_the_cache() -> None:
    """Each step appends to every layer and the offset equals the cached length afterwards."""
    state = DecoderState(n_layers=N_LAYERS)
    _extend(state, 4)
    _extend(state, 1)
    _extend(state, 3)
    assert state.offset == 8
    assert all(k.shape == (B, H, 8, DH) for k in state.self_k)
    assert _token_values(state, layer=2, row=1) == list(range(8))
    assert state.positions(2).tolist() == [[8, 9]]
    assert state.batch_size == B


def test_advance_refuses_an_offset_the_cache_does_not_have() -> None:
    """Advancing by more tokens than were appended is an internal error, caught at once."""
    state = DecoderState(n_layers=1)
    state.extend_layer(0, *_kv(1, 2, 0))
    with pytest.raises(AssertionError):
        state.advance(3)


def test_rewind_trims_every_layer_and_the_offset_together() -> None:
    """Rewinding n tokens keeps exactly the first offset - n tokens in every layer."""
    state = DecoderState(n_layers=N_LAYERS)
    _extend(state, 5)
    _extend(state, 2)
    state.rewind(3)
    assert state.offset == 4
    for layer in range(N_LAYERS):
        assert state.self_k[layer].shape[2] == state.self_v[layer].shape[2] == 4
        assert _token_values(state, layer) == [0, 1, 2, 3]
    _extend(state, 2)  # re-extending continues at position 4
    assert _token_values(state) == [0, 1, 2, 3, 4, 5]
    assert state.positions(1).tolist() == [[6]]


def test_rewind_zero_is_a_no_op_and_rewind_all_empties_the_cache() -> None:
    """rewind(0) changes nothing; rewinding everything leaves an empty cache that can be extended again."""
    state = DecoderState(n_layers=N_LAYERS)
    _extend(state, 3)
    before = state.self_k[0]
    state.rewind(0)
    assert state.self_k[0] is before and state.offset == 3
    state.rewind(3)
    assert state.offset == 0 and state.self_k == [None] * N_LAYERS
    _extend(state, 2)
    assert _token_values(state) == [0, 1]


@pytest.mark.parametrize("n", [-1, 4])
def test_rewind_out_of_range_raises(n: int) -> None:
    """Rewinding a negative count or more than is cached raises ValueError and leaves the state alone."""
    state = DecoderState(n_layers=N_LAYERS)
    _extend(state, 3)
    with pytest.raises(ValueError):
        state.rewind(n)
    assert state.offset == 3 and state.self_k[0].shape[2] == 3


def test_truncate_keeps_a_prefix() -> None:
    """truncate(k) keeps the first k tokens."""
    state = DecoderState(n_layers=N_LAYERS)
    _extend(state, 6)
    state.truncate(2)
    assert state.offset == 2 and _token_values(state, layer=1) == [0, 1]


def test_reorder_selects_rows_of_self_cache_cross_cache_and_padding() -> None:
    """reorder([1, 1, 0]) makes rows (old 1, old 1, old 0) in every tensor that has a batch dimension."""
    state = _state_with_cross(batch=2)
    state.left_pad = torch.tensor([0, 2])
    state.cross_valid = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    _extend(state, 3)
    old_k = state.self_k[1].clone()
    old_cross = state.cross_k[2].clone()
    state.reorder(torch.tensor([1, 1, 0]))
    assert state.batch_size == 3
    torch.testing.assert_close(state.self_k[1], old_k[[1, 1, 0]])
    torch.testing.assert_close(state.self_v[1], -old_k[[1, 1, 0]])
    torch.testing.assert_close(state.cross_k[2], old_cross[[1, 1, 0]])
    assert state.left_pad.tolist() == [2, 2, 0]
    assert state.cross_valid.sum(1).tolist() == [4, 4, 6]
    assert state.offset == 3


def test_repeat_makes_identical_rows_and_keeps_shared_cross_attention() -> None:
    """repeat(n) on a one-row state gives n identical self-cache rows; the cross cache stays one broadcast row."""
    state = _state_with_cross(batch=1)
    _extend(state, 4, batch=1)
    state.repeat(3)
    assert state.batch_size == 3
    for r in range(3):
        torch.testing.assert_close(state.self_k[0][r], state.self_k[0][0])
    assert state.cross_k[0].shape[0] == 1  # shared, not copied: beams see the same audio


def test_reset_drops_tokens_but_keeps_the_audio() -> None:
    """reset() empties the token cache and offset; the cross-attention keys/values stay."""
    state = _state_with_cross()
    cross = state.cross_k
    _extend(state, 5, batch=1)
    state.left_pad = torch.tensor([1])
    state.reset()
    assert state.offset == 0 and state.self_k == [None] * N_LAYERS and state.left_pad is None
    assert state.cross_k is cross


def test_set_cross_replaces_audio_and_keeps_tokens() -> None:
    """set_cross installs new encoder keys/values without touching the token cache (a moving audio window)."""
    state = _state_with_cross(frames=6)
    _extend(state, 2, batch=1)
    new = [torch.zeros(1, H, 9, DH) for _ in range(N_LAYERS)]
    state.set_cross(new, new)
    assert state.cross_k[0].shape[2] == 9
    assert state.offset == 2 and _token_values(state) == [0, 1]


def test_clone_is_independent_of_the_original() -> None:
    """Extending or rewinding a clone leaves the original's cache and offset untouched."""
    state = DecoderState(n_layers=N_LAYERS)
    _extend(state, 3)
    copy = state.clone()
    _extend(copy, 2)
    assert state.offset == 3 and state.self_k[0].shape[2] == 3
    copy.rewind(4)
    assert state.offset == 3 and _token_values(state) == [0, 1, 2]
    assert copy.offset == 1


def test_self_key_mask_is_none_for_one_unpadded_token() -> None:
    """A single new token over an unpadded cache may see everything: no mask is built."""
    state = DecoderState(n_layers=1)
    _extend(state, 4, batch=1)
    assert state.self_key_mask(1) is None


def test_self_key_mask_is_causal_over_the_cache() -> None:
    """Three new tokens after two cached ones: token i sees cached tokens and new tokens up to itself."""
    state = DecoderState(n_layers=1)
    _extend(state, 2, batch=1)
    mask = state.self_key_mask(3)
    assert mask.shape == (1, 1, 3, 5)
    assert mask[0, 0].int().tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]


def test_left_padding_hides_pad_slots_and_shifts_positions() -> None:
    """A row with 2 pad slots never attends to them and its first real token gets position 0."""
    state = DecoderState(n_layers=1)
    state.left_pad = torch.tensor([2, 0])
    assert state.positions(4).tolist() == [[-2, -1, 0, 1], [0, 1, 2, 3]]
    mask = state.self_key_mask(4)
    assert mask.shape == (2, 1, 4, 4)
    assert mask[0, 0, 3].int().tolist() == [0, 0, 1, 1]
    assert mask[1, 0, 3].int().tolist() == [1, 1, 1, 1]
    _extend(state, 4)
    # one more token: the padded row still hides its pad slots, so a mask is needed even for n_new == 1
    mask = state.self_key_mask(1)
    assert mask is not None and mask[0, 0, 0].int().tolist() == [0, 0, 1, 1, 1]
    assert state.positions(1).tolist() == [[2], [4]]
