"""Translating sentences with a loaded MT model: the one entry point the streaming stage and `file` use.

A Translator holds no per-stream state (every call builds its own DecoderState), so one loaded model serves every
stream and every target language; it keeps a few recent encoder outputs, because a multilingual model translating
one source sentence into several targets (and a partial being re-translated as it grows) encodes the same ids
again and again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import Tensor

from .loading import MTBundle
from .search import MTSearchOptions, search

log = logging.getLogger(__name__)

ENCODER_CACHE_SIZE = 16  # source sentences whose encoder output is kept


@dataclass(frozen=True)
class Translation:
    text: str
    tokens: tuple[int, ...]  # generated target tokens (no start, language or eos token)
    finished: bool  # ended with eos (False: cut at max_length)
    elapsed_s: float = 0.0


class Translator:
    def __init__(self, bundle: MTBundle, num_beams: int | None = None, max_length: int | None = None) -> None:
        self.bundle = bundle
        self.model = bundle.model
        self.tokenizer = bundle.tokenizer
        gen = bundle.generation
        self.num_beams = num_beams or gen.num_beams
        self.max_length = min(max_length or gen.max_length, self.model.n_text_ctx)
        self._encoded: OrderedDict[tuple[int, ...], Tensor] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.bundle.name

    def options(self, num_beams: int | None = None) -> MTSearchOptions:
        gen = self.bundle.generation
        return MTSearchOptions(
            num_beams=num_beams or self.num_beams,
            max_length=self.max_length,
            length_penalty=gen.length_penalty,
            early_stopping=gen.early_stopping,
            eos=gen.eos_token_id,
            forced_eos=gen.forced_eos_token_id,
            banned=gen.bad_token_ids,
        )

    def _encode(self, ids: list[int]) -> Tensor:
        key = tuple(ids)
        with self._lock:
            hit = self._encoded.get(key)
            if hit is not None:
                self._encoded.move_to_end(key)
                return hit
        out = self.model.encode(torch.tensor([ids], device=self.model.device))  # (1, S, D)
        with self._lock:
            self._encoded[key] = out
            while len(self._encoded) > ENCODER_CACHE_SIZE:
                self._encoded.popitem(last=False)
        return out

    @torch.inference_mode()
    def translate(
        self,
        text: str,
        source: str | None,
        target: str | None,
        *,
        num_beams: int | None = None,
        prefix: tuple[int, ...] = (),
    ) -> Translation:
        """One sentence (or clause) of source text -> target text. `prefix`: target tokens to force first (a
        policy's committed translation); the result's tokens include them."""
        t0 = time.perf_counter()
        text = " ".join(text.split())
        if not text:
            return Translation("", (), True)
        ids = self.tokenizer.source_ids(text, source, target)
        limit = self.model.n_text_ctx
        if len(ids) > limit:  # keep the end-of-sentence token: the model never saw a source without it
            log.warning("source of %d tokens cut to the model's %d positions", len(ids), limit)
            ids = ids[: limit - 1] + ids[-1:]
        state = self.model.new_state(self._encode(ids))
        gen = self.bundle.generation
        forced = [gen.decoder_start_token_id] + self.tokenizer.target_prefix(target)
        hyp = search(self.model, state, forced + list(prefix), self.options(num_beams))
        out = [t for t in hyp.tokens[len(forced) :] if t != gen.eos_token_id]
        elapsed = time.perf_counter() - t0
        result = Translation(self.tokenizer.decode(out), tuple(out), hyp.finished, elapsed)
        log.debug("translated %d source tokens -> %d tokens in %.0f ms", len(ids), len(out), 1000 * elapsed)
        return result
