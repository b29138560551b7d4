"""Speed of the wav2vec2 + Speech2Text2 family on a random model with the public en→de checkpoint's dimensions.

    .venv/bin/python -m benchmarks.bench_s2t2 [--threads 2] [--seconds 5 10]

No weights are downloaded: the dimensions are those of facebook/s2t-wav2vec2-large-en-de (a wav2vec2-large-lv60
encoder: 24 pre-LN layers of width 1024, layer-norm feature encoder; a 7-layer Speech2Text2 decoder of width 256 with
4 heads, FFN 2048 and a 10224-piece vocabulary), so timings match the real model's, not its text.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np
import torch

from engine.kv_cache import DecoderState
from engine.models.s2t2.model import S2T2, S2T2Config
from engine.models.s2t2.wav2vec2 import SAMPLE_RATE, Wav2Vec2Config, normalize_audio

ENCODER = Wav2Vec2Config(
    conv_bias=True,
    feat_extract_norm="layer",
    hidden_size=1024,
    num_hidden_layers=24,
    num_attention_heads=16,
    intermediate_size=4096,
    do_stable_layer_norm=True,
)
DECODER = S2T2Config(
    vocab_size=10224,
    d_model=256,
    decoder_layers=7,
    decoder_attention_heads=4,
    decoder_ffn_dim=2048,
    max_target_positions=1024,
    scale_embedding=True,
)


@dataclass(frozen=True)
class Row:
    what: str
    value: float
    unit: str


def _time(fn, repeats: int) -> float:
    fn()  # warm-up: allocator and kernel selection
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


@torch.inference_mode()
def run(
    seconds: tuple[float, ...] = (5.0, 10.0), n_tokens: int = 32, repeats: int = 2, threads: int | None = 2
) -> list[Row]:
    """Encoder ms per second of audio for each window length, decoder ms per token with the cache (and without)."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = S2T2(ENCODER, DECODER).eval()
    rows = [Row("parameters", sum(p.numel() for p in model.parameters()) / 1e6, "M")]
    rng = np.random.default_rng(0)
    enc_out = None
    for s in seconds:
        audio = torch.from_numpy(normalize_audio(rng.standard_normal(int(s * SAMPLE_RATE)).astype(np.float32)))[None]
        dt = _time(lambda audio=audio: model.encode(audio), repeats)
        rows.append(Row(f"encoder, {s:g} s window", 1000 * dt / s, "ms per s of audio"))
        enc_out = model.encode(audio)[0]
    assert enc_out is not None
    tokens = torch.randint(3, DECODER.vocab_size, (1, n_tokens))

    def cached() -> None:
        state = model.new_state(enc_out)
        for i in range(n_tokens):
            model.step(tokens[:, i : i + 1], state)

    def recomputed() -> None:  # what a decoder without a cache does: the whole prefix at every step
        for i in range(n_tokens):
            model.step(tokens[:, : i + 1], model.new_state(enc_out))

    rows.append(
        Row(f"decoder step with cache ({n_tokens} tokens)", 1000 * _time(cached, repeats) / n_tokens, "ms per token")
    )
    rows.append(
        Row(
            f"decoder step recomputing the prefix ({n_tokens} tokens)",
            1000 * _time(recomputed, repeats) / n_tokens,
            "ms per token",
        )
    )
    state = DecoderState(n_layers=DECODER.decoder_layers)
    rows.append(
        Row(
            "cross-attention keys/values per window",
            1000 * _time(lambda: model.set_audio(state, enc_out), repeats),
            "ms",
        )
    )
    return rows


def format_table(rows: list[Row]) -> str:
    width = max(len(r.what) for r in rows)
    lines = [
        f"{'s2t2 (wav2vec2-large + 7-layer decoder, random weights)':<{width}}  {'value':>9}  unit",
        "-" * (width + 30),
    ]
    lines += [f"{r.what:<{width}}  {r.value:>9.2f}  {r.unit}" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, nargs="+", default=[5.0, 10.0])
    parser.add_argument("--tokens", type=int, default=32)
    args = parser.parse_args()
    print(format_table(run(tuple(args.seconds), args.tokens, threads=args.threads)))


if __name__ == "__main__":
    main()
