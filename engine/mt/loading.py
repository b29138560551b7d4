"""Loading text MT checkpoints: MarianMT (opus-mt) and M2M100 / NLLB-200, from an HF-format directory or a hub id.

Everything that can be checked is checked before a weight is read, and every failure is a ModelLoadError naming
the file or field. The weights may be model.safetensors, pytorch_model.bin or a sharded index of either (the
speech loader's reader); the vocabulary SentencePiece files or a tokenizer.json; generation_config.json is
honoured (beam width, length, length penalty, forced tokens, banned tokens).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch

from ..errors import ModelLoadError
from ..models.checkpoint import (
    check_weights,
    generation_lookup,
    hub_snapshot,
    looks_like_path,
    no_random_init,
    read_config,
    read_state_dict,
    warn_unapplied,
)
from ..models.common import place, resolve_device
from ..models.s2t2.wav2vec2 import ACTIVATIONS
from .model import MTConfig, MTModel
from .tokenizer import MTTokenizer, load_tokenizer

log = logging.getLogger(__name__)

DEFAULT_MAX_LENGTH = 256  # HF's own default (20 tokens) cuts sentences; opus-mt checkpoints say 512
# HF generation options with their neutral values: other values are logged as not applied
UNAPPLIED_OPTIONS = {
    "no_repeat_ngram_size": 0,
    "repetition_penalty": 1.0,
    "min_length": 0,
    "do_sample": False,
    "encoder_no_repeat_ngram_size": 0,
    "num_beam_groups": 1,
}
IGNORED_WEIGHTS = ("embed_positions",)  # sinusoids are recomputed, never trained
HUB_PATTERNS = ["*.json", "*.safetensors", "*.bin", "*.spm", "*.model", "*.txt"]


@dataclass(frozen=True)
class MTGeneration:
    """What `generate` would read from the checkpoint (generation_config.json, else config.json)."""

    decoder_start_token_id: int
    eos_token_id: int
    pad_token_id: int
    max_length: int = DEFAULT_MAX_LENGTH  # the start token included, as in HF
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: bool | Literal["never"] = False
    forced_eos_token_id: int | None = None  # forced as the last token when max_length is reached
    bad_token_ids: tuple[int, ...] = ()  # single-token bad_words_ids (Marian bans <pad>)


@dataclass
class MTBundle:
    """A loaded MT model with its tokenizer and generation settings."""

    model: MTModel
    tokenizer: MTTokenizer
    name: str
    generation: MTGeneration
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    quantized: bool = False  # the decoder's Linear layers run in int8 (CPU)

    @property
    def family(self) -> str:
        return self.model.config.family

    @property
    def source_languages(self) -> tuple[str, ...] | None:
        return self.tokenizer.source_languages

    @property
    def target_languages(self) -> tuple[str, ...] | None:
        return self.tokenizer.target_languages

    def can_translate(self, source: str | None, target: str) -> bool:
        """True when the checkpoint is known to read `source` and write `target` (unknown lists count as yes)."""
        src_ok = self.source_languages is None or source in self.source_languages
        tgt_ok = self.target_languages is None or target in self.target_languages
        return src_ok and tgt_ok


def load_mt(name: str, device: str = "cpu", quantize: Literal["auto", "none", "decoder"] = "auto") -> MTBundle:
    """An MT model by directory or hub id (e.g. Helsinki-NLP/opus-mt-en-de, facebook/nllb-200-distilled-600M).

    quantize: "auto" (default) runs the decoder's Linear layers in int8 on a CPU, as for Whisper — about 5x faster
    decoder steps for opus-mt (24 -> 5 ms on one thread), which is most of a translation's time; "none" keeps fp32
    (token-identical to transformers); on a GPU the model runs in fp16 either way."""
    dev = resolve_device(device)
    path = Path(name).expanduser()
    if path.exists():
        bundle = load_mt_directory(path, name)
    elif looks_like_path(name):
        raise ModelLoadError(f"MT model directory not found: {name}")
    else:
        bundle = load_mt_directory(download_mt(name), name)
    if quantize not in ("auto", "none", "decoder"):
        raise ModelLoadError(f"unknown MT quantization {quantize!r}: use auto, none or decoder")
    return place(bundle, dev, int8_decoder=quantize != "none")


def load_mt_directory(path: Path, name: str | None = None) -> MTBundle:
    t0 = time.perf_counter()
    path = Path(path)
    cfg = read_config(path, "MT ")
    config = parse_config(cfg, path / "config.json")
    tokenizer = load_tokenizer(path, config.family, name or str(path))
    generation = _generation(path, cfg, tokenizer, config)
    sd = map_weights(read_state_dict(path), config, path)
    with no_random_init():
        model = MTModel(config)
    check_weights(model, sd, path)
    model.load_state_dict(sd, strict=False, assign=True)
    model.eval()
    log.info(
        "loaded %s MT model %s in %.2f s (languages %s -> %s)",
        config.family,
        name or path,
        time.perf_counter() - t0,
        _langs(tokenizer.source_languages),
        _langs(tokenizer.target_languages),
    )
    return MTBundle(model=model, tokenizer=tokenizer, name=name or str(path), generation=generation)


def _langs(codes: tuple[str, ...] | None) -> str:
    if codes is None:
        return "?"
    return ",".join(codes) if len(codes) <= 6 else f"{len(codes)} languages"


def download_mt(repo_id: str) -> Path:
    """A snapshot of `repo_id` from the local hub cache, else the network; fails at once when offline."""
    return hub_snapshot(repo_id, HUB_PATTERNS, "MT model", lambda why: _offline_message(repo_id, why))


def _offline_message(repo_id: str, why: str) -> str:
    return (
        f"cannot download the MT model {repo_id!r} from the Hugging Face hub ({why}). Offline alternatives: "
        "an MT checkpoint directory on disk (--mt-model /path/to/opus-mt-en-de with config.json, the weights "
        "and source.spm/target.spm/vocab.json), or no --target (captions in the speech model's language)"
    )


# -- config.json ---------------------------------------------------------------------------------------------
def parse_config(cfg: dict[str, Any], where: Path | str = "config.json") -> MTConfig:
    """The MTConfig of a Marian or M2M100 config.json; ModelLoadError names what is unsupported."""
    model_type = cfg.get("model_type")
    if model_type not in ("marian", "m2m_100"):
        raise ModelLoadError(
            f"{where}: model_type {model_type!r} is not a supported MT model "
            "(supported: 'marian' for opus-mt, 'm2m_100' for M2M100 and NLLB-200)"
        )
    marian = model_type == "marian"
    try:
        d_model = int(cfg.get("d_model", 512 if marian else 1024))
        vocab = int(cfg["vocab_size"])
        shared = bool(cfg.get("share_encoder_decoder_embeddings", True)) if marian else True
        dec_vocab = int(cfg.get("decoder_vocab_size") or vocab) if marian and not shared else vocab
        c = MTConfig(
            family="marian" if marian else "m2m100",
            vocab_size=vocab,
            decoder_vocab_size=dec_vocab,
            d_model=d_model,
            encoder_layers=int(cfg.get("encoder_layers", 6 if marian else 12)),
            decoder_layers=int(cfg.get("decoder_layers", 6 if marian else 12)),
            encoder_attention_heads=int(cfg.get("encoder_attention_heads", 8 if marian else 16)),
            decoder_attention_heads=int(cfg.get("decoder_attention_heads", 8 if marian else 16)),
            encoder_ffn_dim=int(cfg.get("encoder_ffn_dim", 2048 if marian else 4096)),
            decoder_ffn_dim=int(cfg.get("decoder_ffn_dim", 2048 if marian else 4096)),
            activation_function=str(cfg.get("activation_function", "swish" if marian else "relu")),
            max_position_embeddings=int(cfg.get("max_position_embeddings", 1024)),
            pad_token_id=int(cfg.get("pad_token_id", 58100 if marian else 1)),
            scale_embedding=bool(cfg.get("scale_embedding", marian)),
            pre_ln=not marian,
            positions="marian" if marian else "fairseq",
            logits_bias=marian,
            shared_embeddings=shared,
        )
    except KeyError as e:
        raise ModelLoadError(f"{where} lacks the field {e}") from None
    except (TypeError, ValueError) as e:
        raise ModelLoadError(f"{where}: {e}") from None
    for side, heads in (("encoder", c.encoder_attention_heads), ("decoder", c.decoder_attention_heads)):
        if c.d_model % heads:
            raise ModelLoadError(f"{where}: d_model {c.d_model} is not divisible by {side}_attention_heads {heads}")
    if c.activation_function not in ACTIVATIONS:
        raise ModelLoadError(f"{where}: activation_function {c.activation_function!r} is not supported")
    if marian and cfg.get("normalize_before"):
        raise ModelLoadError(f"{where}: normalize_before (pre-LN Marian) is not supported")
    if not marian and cfg.get("layernorm_embedding"):
        raise ModelLoadError(f"{where}: layernorm_embedding is not part of M2M100 and is not supported")
    if not 0 <= c.pad_token_id < c.decoder_vocab_size:
        raise ModelLoadError(f"{where}: pad_token_id {c.pad_token_id} is outside the vocabulary")
    return c


def _generation(path: Path, cfg: dict[str, Any], tokenizer: MTTokenizer, config: MTConfig) -> MTGeneration:
    """generation_config.json when present, else config.json (HF's precedence)."""
    get = generation_lookup(path, cfg)
    warn_unapplied(get, UNAPPLIED_OPTIONS, path)
    eos = get("eos_token_id", tokenizer.eos_id)
    if isinstance(eos, list):
        eos = eos[0]
    forced_eos = get("forced_eos_token_id")
    if isinstance(forced_eos, list):
        forced_eos = forced_eos[0]
    bad: list[int] = []
    for seq in get("bad_words_ids", []) or []:
        if len(seq) == 1:
            bad.append(int(seq[0]))
        else:
            log.warning("%s: multi-token bad_words_ids %s are not applied", path, seq)
    early = get("early_stopping", False)
    pad = int(get("pad_token_id", config.pad_token_id))
    return MTGeneration(
        decoder_start_token_id=int(get("decoder_start_token_id", pad if config.family == "marian" else eos)),
        eos_token_id=int(eos),
        pad_token_id=pad,
        max_length=min(int(get("max_length", DEFAULT_MAX_LENGTH)), config.max_position_embeddings),
        num_beams=int(get("num_beams", 1)),
        length_penalty=float(get("length_penalty", 1.0)),
        early_stopping=early if early == "never" else bool(early),
        forced_eos_token_id=None if forced_eos is None else int(forced_eos),
        bad_token_ids=tuple(bad),
    )


# -- weights -------------------------------------------------------------------------------------------------
def map_weights(hf: dict[str, torch.Tensor], config: MTConfig, path: Path | str) -> dict[str, torch.Tensor]:
    """HF names (model.encoder.layers.0.self_attn.k_proj.weight, model.shared.weight, lm_head.weight,
    final_logits_bias) -> ours; tied embeddings filled in from whichever copy the checkpoint kept."""
    sd: dict[str, torch.Tensor] = {}
    for key, tensor in hf.items():
        if any(part in key for part in IGNORED_WEIGHTS):
            continue
        ours = key.removeprefix("model.")
        if ours == "lm_head.weight":
            ours = "decoder.lm_head.weight"
        sd[ours] = tensor.float()
    shared = sd.pop("shared.weight", None)
    if config.shared_embeddings:
        table = shared
        for k in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
            table = table if table is not None else sd.get(k)
        if table is None:
            raise ModelLoadError(f"{path}: the checkpoint has no token embedding (model.shared.weight)")
        sd.setdefault("encoder.embed_tokens.weight", table)
        sd.setdefault("decoder.embed_tokens.weight", table)
    # tied output projection (tie_word_embeddings): checkpoints may drop lm_head and share the decoder's table
    if "decoder.lm_head.weight" not in sd and "decoder.embed_tokens.weight" in sd:
        sd["decoder.lm_head.weight"] = sd["decoder.embed_tokens.weight"]
    if config.logits_bias and "final_logits_bias" not in sd:
        sd["final_logits_bias"] = torch.zeros(1, config.decoder_vocab_size)
    return sd


def with_overrides(gen: MTGeneration, num_beams: int | None = None, max_length: int | None = None) -> MTGeneration:
    """The checkpoint's generation settings with the caller's beam width / length where given."""
    return replace(gen, num_beams=num_beams or gen.num_beams, max_length=max_length or gen.max_length)
