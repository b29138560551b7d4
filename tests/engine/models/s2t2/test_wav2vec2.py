"""The wav2vec2 encoder and front end against transformers 4.46.3 on tiny random models."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from engine.models.s2t2.load import _wav2vec2_config, map_weights
from engine.models.s2t2.wav2vec2 import Wav2Vec2Encoder, normalize_audio
from tests.s2t2_reference import speech_like, tiny_wav2vec2_config


def _pair(norm: str, stable: bool, seed: int):
    """A random HF Wav2Vec2Model and our encoder carrying the same weights."""
    from transformers import Wav2Vec2Model

    torch.manual_seed(seed)
    cfg = tiny_wav2vec2_config(feat_extract_norm=norm, stable_layer_norm=stable, num_conv_pos_embeddings=15)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = Wav2Vec2Model(cfg).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.1 * torch.randn_like(p))  # move away from the init (unit LayerNorms, zero biases)
    ours_cfg = _wav2vec2_config(cfg.to_dict())
    ours = Wav2Vec2Encoder(ours_cfg).eval()
    sd = {"encoder." + k: v for k, v in ref.state_dict().items()}
    # map_weights expects a whole SpeechEncoderDecoder checkpoint: take the encoder part of its answer
    from engine.models.s2t2.model import S2T2, S2T2Config

    full = S2T2(
        ours_cfg,
        S2T2Config(
            vocab_size=8,
            d_model=32,
            decoder_layers=1,
            decoder_attention_heads=4,
            decoder_ffn_dim=8,
            max_target_positions=8,
        ),
    )
    dec = {k: v for k, v in full.state_dict().items() if not k.startswith("encoder.")}
    mapped = map_weights({**sd, **dec}, full, "test")
    ours.load_state_dict({k.removeprefix("encoder."): v for k, v in mapped.items() if k.startswith("encoder.")})
    return ref, ours


@pytest.mark.parametrize("norm,stable", [("group", False), ("layer", True), ("layer", False), ("group", True)])
def test_encoder_matches_reference(norm: str, stable: bool) -> None:
    """Both feature-encoder norms and both layer-norm placements give the reference's hidden states (fp32)."""
    ref, ours = _pair(norm, stable, seed=7)
    x = torch.from_numpy(normalize_audio(speech_like(6000, 3)))[None]
    with torch.no_grad():
        expected = ref(x).last_hidden_state
        got, valid = ours(x)
    assert valid is None
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("norm,stable", [("layer", True), ("group", False)])
def test_padded_batch_matches_reference_mask(norm: str, stable: bool) -> None:
    """With a sample mask, real frames of a padded row equal the reference given the same attention mask."""
    ref, ours = _pair(norm, stable, seed=11)
    a, b = normalize_audio(speech_like(6000, 1)), normalize_audio(speech_like(4100, 2))
    batch = torch.zeros(2, 6000)
    batch[0], batch[1, :4100] = torch.from_numpy(a), torch.from_numpy(b)
    mask = torch.zeros(2, 6000, dtype=torch.bool)
    mask[0], mask[1, :4100] = True, True
    with torch.no_grad():
        expected = ref(batch, attention_mask=mask.long()).last_hidden_state
        got, valid = ours(batch, mask)
    n_real = int(ref._get_feat_extract_output_lengths(torch.tensor(4100)))
    assert valid[0].all() and valid[1].sum() == n_real and valid[1, :n_real].all()
    torch.testing.assert_close(got[0], expected[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[1, :n_real], expected[1, :n_real], rtol=1e-5, atol=1e-5)


def test_normalisation_matches_feature_extractor() -> None:
    """Zero mean / unit variance per utterance equals Wav2Vec2FeatureExtractor's output exactly enough for fp32."""
    from transformers import Wav2Vec2FeatureExtractor

    audio = speech_like(12345, 5) * 3 + 0.1
    expected = Wav2Vec2FeatureExtractor(do_normalize=True)(audio, sampling_rate=16000).input_values[0]
    got = normalize_audio(audio)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    assert abs(float(got.mean())) < 1e-5 and abs(float(got.std()) - 1) < 1e-3


def test_output_lengths_match_reference_formula() -> None:
    """Frame counts for any input length follow the reference's convolution arithmetic, adapter included."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    cfg = Wav2Vec2Config(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        conv_dim=(8, 8),
        conv_kernel=(10, 3),
        conv_stride=(5, 2),
        num_conv_pos_embeddings=4,
        num_conv_pos_embedding_groups=2,
        add_adapter=True,
        adapter_stride=2,
        num_adapter_layers=2,
    )
    ref = Wav2Vec2Model(cfg)
    ours = _wav2vec2_config(cfg.to_dict())
    n = torch.tensor([400, 401, 999, 16000, 31999])
    assert torch.equal(ours.output_lengths(n), ref._get_feat_extract_output_lengths(n))
    assert torch.equal(
        ours.output_lengths(n, with_adapter=False), ref._get_feat_extract_output_lengths(n, add_adapter=False)
    )


def test_too_short_input_is_rejected_clearly() -> None:
    """Fewer samples than the first convolution's receptive field is a ValueError naming the minimum."""
    _, ours = _pair("group", False, seed=1)
    with pytest.raises(ValueError, match="at least 60 samples"):
        ours(torch.zeros(1, 50))
