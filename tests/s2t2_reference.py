"""Tiny random wav2vec2 + Speech2Text2 checkpoints built with transformers 4.46.3 (the reference), saved in HF format.

Shared by tests/engine/models/s2t2/ and tests/integration/test_s2t2_streaming.py; nothing here is a test itself.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tests.reference_weights import randomise_weights

# A small fastBPE vocabulary: specials first (as in the released checkpoint), then pieces; "@@" continues a word.
PIECES = [
    "<s>",
    "<pad>",
    "</s>",
    "<unk>",
    "ein",
    "Mann",
    "sag@@",
    "te",
    "zum",
    "Uni@@",
    "vers@@",
    "um",
    ":",
    '"',
    "Sir",
    ",",
    "ich",
    "exist@@",
    "iert",
    "!",
    "Sch@@",
    "ön",
    "über",
    "Straße",
    "a",
    "b",
    "c",
    "d",
    "e",
    "f",
    "g",
    "h",
    "i",
    "k",
    "l",
    "m",
    "n",
    "o",
    "p",
    "r",
    "s",
    "t",
    "u",
    "w",
    "a@@",
    "e@@",
    "i@@",
    "n@@",
    "s@@",
    "t@@",
    "er",
    "en",
    "ch",
    "ei",
    "ie",
    "un@@",
    "d@@",
    "Haus",
    "Welt",
    ".",
]
MERGES = [
    "e r</w>",
    "e n</w>",
    "c h</w>",
    "e i</w>",
    "i e</w>",
    "u n",
    "H a",
    "Ha u",
    "Hau s</w>",
    "W e",
    "We l",
    "Wel t</w>",
    "S c",
    "Sc h",
    "ö n</w>",
]


@dataclass(frozen=True)
class Variant:
    """One corner of the architecture matrix the parity tests cover."""

    name: str
    feat_extract_norm: str  # "group" (base) or "layer" (large-lv60)
    stable_layer_norm: bool  # pre-LN encoder layers
    scale_embedding: bool
    d_model: int  # decoder width; != encoder hidden (32) means an enc_to_dec_proj exists
    attention_mask: bool  # the feature extractor returns one (layer-norm models do)
    conv_bias: bool = False
    seed: int = 0


VARIANTS = [
    Variant("base-group-postln-proj", "group", False, True, 24, False, seed=1),
    Variant("large-layer-preln-noproj", "layer", True, False, 32, True, conv_bias=True, seed=2),
    Variant("layer-postln-proj-noscale", "layer", False, False, 24, True, seed=3),
    Variant("group-preln-proj-scale", "group", True, True, 16, False, conv_bias=True, seed=4),
]
ENC_HIDDEN = 32
SAMPLES_PER_FRAME = 80  # conv strides 5 * 4 * 4


def tiny_wav2vec2_config(
    *, feat_extract_norm: str, stable_layer_norm: bool, conv_bias: bool = True, num_conv_pos_embeddings: int = 16
):
    """A tiny transformers Wav2Vec2Config: ENC_HIDDEN wide, two layers, three convolutions (SAMPLES_PER_FRAME)."""
    from transformers import Wav2Vec2Config

    return Wav2Vec2Config(
        hidden_size=ENC_HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        conv_dim=(16, 16, 16),
        conv_kernel=(10, 3, 3),
        conv_stride=(5, 4, 4),
        conv_bias=conv_bias,
        feat_extract_norm=feat_extract_norm,
        do_stable_layer_norm=stable_layer_norm,
        num_conv_pos_embeddings=num_conv_pos_embeddings,
        num_conv_pos_embedding_groups=4,
    )


def build_reference(tmp: Path, v: Variant, safe_serialization: bool = True, max_shard_size: str | None = None):
    """Build, randomise and save a tiny SpeechEncoderDecoderModel; return the reference reloaded from disk."""
    from transformers import (
        Speech2Text2Config,
        Speech2Text2ForCausalLM,
        Speech2Text2Tokenizer,
        SpeechEncoderDecoderModel,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2Model,
    )

    torch.manual_seed(v.seed)
    enc_cfg = tiny_wav2vec2_config(
        feat_extract_norm=v.feat_extract_norm, stable_layer_norm=v.stable_layer_norm, conv_bias=v.conv_bias
    )
    dec_cfg = Speech2Text2Config(
        vocab_size=len(PIECES),
        d_model=v.d_model,
        decoder_layers=2,
        decoder_attention_heads=4,
        decoder_ffn_dim=40,
        scale_embedding=v.scale_embedding,
        max_target_positions=64,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=2,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = SpeechEncoderDecoderModel(encoder=Wav2Vec2Model(enc_cfg), decoder=Speech2Text2ForCausalLM(dec_cfg))
    g = torch.Generator().manual_seed(1234)
    randomise_weights(model, g)
    _calibrate_eos(model, g)
    for cfg in (model.config, model.generation_config):
        cfg.decoder_start_token_id = 0
        cfg.pad_token_id = 1
        cfg.eos_token_id = 2
    model.config.decoder.decoder_start_token_id = 0
    path = tmp / v.name
    kwargs = {"safe_serialization": safe_serialization}
    if max_shard_size:
        kwargs["max_shard_size"] = max_shard_size
    model.save_pretrained(path, **kwargs)
    write_tokenizer(path)
    Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=16000,
        padding_value=0.0,
        do_normalize=True,
        return_attention_mask=v.attention_mask,
    ).save_pretrained(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = SpeechEncoderDecoderModel.from_pretrained(path).eval()
        tok = Speech2Text2Tokenizer.from_pretrained(path)
    return ref, tok, path


def write_tokenizer(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.json").write_text(json.dumps({p: i for i, p in enumerate(PIECES)}, ensure_ascii=False))
    (path / "merges.txt").write_text("\n".join(MERGES) + "\n", encoding="utf-8")
    (path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "Speech2Text2Tokenizer"}))
    (path / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": "<s>", "pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"})
    )


@torch.no_grad()
def _calibrate_eos(model, g: torch.Generator, n_steps: int = 14) -> None:
    """Random decoders almost never pick </s>; fit its output row so that its logit rises with the position
    (from well below the best other token at the start to above it after ~8 tokens, like a real model's), and so
    that beams finish at different lengths and beam search's bookkeeping for finished hypotheses is exercised."""
    audio = torch.from_numpy(speech_like(8000, 99))[None]
    audio = (audio - audio.mean()) / audio.std()
    rng = np.random.get_state()  # the encoder's SpecAugment masks (train mode) draw from numpy's global RNG:
    np.random.seed(1234)  # seeded here, so that every run fits the same row, and restored after
    try:
        enc = model.encoder(audio).last_hidden_state
    finally:
        np.random.set_state(rng)
    if getattr(model, "enc_to_dec_proj", None) is not None:
        enc = model.enc_to_dec_proj(enc)
    ids = torch.randint(3, model.decoder.config.vocab_size, (6, n_steps), generator=g)
    ids[:, 0] = 0
    out = model.decoder(input_ids=ids, encoder_hidden_states=enc.expand(6, -1, -1), output_hidden_states=True)
    h = out.hidden_states[-1].reshape(-1, enc.shape[-1])  # what lm_head sees, (6 * n_steps, d)
    best_other = torch.cat([out.logits[..., :2], out.logits[..., 3:]], dim=-1).max(-1).values.reshape(-1)
    ramp = torch.linspace(-4.0, 3.0, n_steps).repeat(6)
    # in float64, as in tests/mt_reference.py: the same eos row on every run
    w = torch.linalg.lstsq(h.double(), (best_other + ramp)[:, None].double()).solution[:, 0].float()
    model.decoder.lm_head.weight[2] = w


def speech_like(n_samples: int, seed: int = 0) -> np.ndarray:
    """Deterministic non-stationary test audio (a chirp with noise and an envelope), float32 at 16 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_samples) / 16000
    x = 0.3 * np.sin(2 * np.pi * (200 + 400 * t) * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    return (x + 0.05 * rng.standard_normal(n_samples)).astype(np.float32)
