"""Tiny seeded random models for the fast tier: the real code paths, a few hundred thousand parameters, no download.

The conftest fixtures `tiny_whisper`, `tiny_whisper_bundle` and `tiny_backend` wrap these; a test that needs
real words uses the embedded model instead (its fixtures make the test slow).
"""

from __future__ import annotations

import dataclasses
import json

import torch

from engine.models.whisper.load import WhisperBundle, _embedded_files
from engine.models.whisper.model import Whisper, WhisperConfig
from engine.models.whisper.tokenizer import WhisperTokenizer

TINY_WHISPER = WhisperConfig(
    n_mels=80,
    n_audio_ctx=40,
    n_audio_state=32,
    n_audio_head=4,
    n_audio_layer=2,
    n_vocab=51865,  # the real vocabulary, so the real tokenizer and suppression rules apply
    n_text_ctx=64,
    n_text_state=32,
    n_text_head=4,
    n_text_layer=3,
    alignment_heads=((1, 0), (2, 3)),
)
# the same network with the real model's context: 30 s audio windows (1500 frames) and 448 text positions, so
# that streaming sessions and the scheduler run on it
TINY_STREAMING_WHISPER = dataclasses.replace(TINY_WHISPER, n_audio_ctx=1500, n_text_ctx=448)


def tiny_whisper(config: WhisperConfig = TINY_WHISPER, seed: int = 1234) -> Whisper:
    """A seeded random Whisper with every parameter (positional embeddings included) drawn non-zero."""
    torch.manual_seed(seed)
    model = Whisper(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ln" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p) if name.endswith("weight") else 0.1 * torch.randn_like(p))
            else:
                p.normal_(0.0, 0.3 if p.dim() > 1 else 0.1)
    return model


def tiny_whisper_bundle(model: Whisper) -> WhisperBundle:
    """`model` behind the real Whisper tokenizer and the embedded model's suppression lists."""
    data_dir, _ = _embedded_files()
    meta = json.loads((data_dir / "config.json").read_text())
    tokenizer = WhisperTokenizer.from_file(data_dir / "tokenizer.json", model.config.n_vocab)
    return WhisperBundle(
        model=model,
        tokenizer=tokenizer,
        name="tiny-random",
        suppress_ids=tuple(meta["suppress_ids"]),
        suppress_ids_begin=tuple(meta["suppress_ids_begin"]),
    )
