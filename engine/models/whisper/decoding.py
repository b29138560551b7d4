"""Decoding Whisper over an explicit DecoderState: language detection, greedy and beam search, Whisper's
token suppression, timestamp rules and no-speech probability."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from ...errors import ConfigError
from ...kv_cache import DecoderState
from ..search import whisper_beam_step
from .load import WhisperBundle

Task = Literal["transcribe", "translate"]
MAX_PROMPT_TOKENS = 223  # openai: n_text_ctx // 2 - 1


@dataclass(frozen=True)
class DecodingOptions:
    task: Task = "transcribe"
    language: str | None = None  # None: detect from the audio
    beam_size: int = 1  # 1 = greedy
    patience: float = 1.0  # beam search stops after beam_size * patience finished hypotheses
    temperature: float = 0.0  # > 0 samples (used by the fallback in transcribe)
    timestamps: bool = False  # predict <|t|> tokens (segment boundaries)
    prompt: tuple[int, ...] = ()  # previous text's tokens, after <|startofprev|>
    prefix: tuple[int, ...] = ()  # forced first tokens of the answer
    max_new_tokens: int = 224
    max_initial_timestamp_s: float = 1.0
    audio_duration_s: float | None = None  # no timestamp past the audio (unpadded windows)
    use_cache: bool = True  # False recomputes the whole prefix at every step (reference / benchmark only)

    def __post_init__(self) -> None:
        if self.task not in ("transcribe", "translate"):
            raise ConfigError(f"task must be 'transcribe' or 'translate', got {self.task!r}")
        if self.beam_size < 1:
            raise ConfigError("beam_size must be >= 1")


@dataclass(frozen=True)
class DecodingResult:
    tokens: list[int]  # the answer: text and timestamp tokens, without the prompt and without <|endoftext|>
    text: str
    language: str | None
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    finished: bool  # ended with <|endoftext|> (False: cut by max_new_tokens)
    language_probs: dict[str, float] = field(default_factory=dict)


def compression_ratio(text: str) -> float:
    """How repetitive a text is (gzip ratio); Whisper's loops score > 2.4."""
    data = text.encode("utf-8")
    return len(data) / max(1, len(zlib.compress(data))) if data else 0.0


@torch.inference_mode()
def detect_language(
    bundle: WhisperBundle, encoder_out: Tensor, valid: Tensor | None = None
) -> tuple[str, dict[str, float]]:
    """One decoder step after <|startoftranscript|>, restricted to the language tokens."""
    tok = bundle.tokenizer
    state = bundle.model.new_state(encoder_out[:1], valid)
    logits = bundle.model.step(torch.tensor([[tok.special.sot]], device=encoder_out.device), state)[0, -1]
    codes = list(tok.language_ids)
    ids = torch.tensor([tok.language_ids[c] for c in codes], device=logits.device)
    probs = logits[ids].softmax(-1).tolist()
    table = dict(zip(codes, probs))
    return max(table, key=table.__getitem__), table


class LogitFilter:
    """Whisper's suppression and timestamp rules, applied to (B, V) logits in place."""

    def __init__(self, bundle: WhisperBundle, options: DecodingOptions, sample_begin: int) -> None:
        tok = bundle.tokenizer
        sp = tok.special
        self.sample_begin = sample_begin
        self.timestamps = options.timestamps
        self.ts_begin = sp.timestamp_begin
        self.eot = sp.eot
        n_vocab = bundle.model.config.n_vocab
        always = set(bundle.suppress_ids) | set(range(sp.eot + 1, sp.timestamp_begin))  # specials except eot
        if not options.timestamps:
            always |= set(range(sp.timestamp_begin, n_vocab))
        self.always = torch.tensor(sorted(i for i in always if 0 <= i < n_vocab), dtype=torch.long)
        self.begin = torch.tensor([i for i in bundle.suppress_ids_begin if 0 <= i < n_vocab], dtype=torch.long)
        self.max_initial_ts = self.ts_begin + round(options.max_initial_timestamp_s / 0.02)
        self.last_ts = None
        if options.audio_duration_s is not None:
            self.last_ts = self.ts_begin + int(options.audio_duration_s / 0.02)

    def __call__(self, logits: Tensor, tokens: Tensor) -> None:
        """logits (B, V) for the next token; tokens (B, T) everything so far (including the prompt)."""
        neg = float("-inf")
        logits[:, self.always.to(logits.device)] = neg
        n_sampled = tokens.shape[1] - self.sample_begin
        if n_sampled == 0 and len(self.begin):
            logits[:, self.begin.to(logits.device)] = neg
        if not self.timestamps:
            return
        ts = self.ts_begin
        if self.last_ts is not None:
            logits[:, self.last_ts + 1 :] = neg
        for b in range(tokens.shape[0]):
            seq = tokens[b, self.sample_begin :].tolist()
            last_ts = len(seq) >= 1 and seq[-1] >= ts
            penult_ts = len(seq) < 2 or seq[-2] >= ts
            if last_ts:
                if penult_ts:  # a pair just closed: next is text (or eot)
                    logits[b, ts:] = neg
                else:  # an open timestamp must be closed by another, or end the text
                    logits[b, : self.eot] = neg
            stamps = [t for t in seq if t >= ts]
            if stamps:
                floor = stamps[-1] if (last_ts and not penult_ts) else stamps[-1] + 1
                logits[b, ts:floor] = neg
        if n_sampled == 0:
            logits[:, :ts] = neg  # the answer starts with a timestamp
            logits[:, self.max_initial_ts + 1 :] = neg
        logprobs = logits.float().log_softmax(-1)
        ts_mass = logprobs[:, ts:].logsumexp(-1)
        text_max = logprobs[:, :ts].max(-1).values
        force = ts_mass > text_max
        if force.any():
            logits[force, :ts] = neg


def _step(bundle: WhisperBundle, tokens: Tensor, state: DecoderState, *, n_new: int, use_cache: bool) -> Tensor:
    """Logits for the last position after feeding the last `n_new` tokens (or everything, without a cache)."""
    if use_cache:
        return bundle.model.step(tokens[:, -n_new:], state)[:, -1]
    state.reset()
    return bundle.model.step(tokens, state)[:, -1]


@torch.inference_mode()
def decode(
    bundle: WhisperBundle, encoder_out: Tensor, options: DecodingOptions, *, valid: Tensor | None = None
) -> DecodingResult:
    """Decode one window of audio (encoder_out: (1, S, d))."""
    tok = bundle.tokenizer
    sp = tok.special
    device = encoder_out.device
    language = options.language
    language_probs: dict[str, float] = {}
    if language is None:
        language, language_probs = detect_language(bundle, encoder_out, valid)
    initial: list[int] = []
    if options.prompt:
        initial = [sp.sot_prev] + list(options.prompt)[-MAX_PROMPT_TOKENS:]
    sot_index = len(initial)
    initial += tok.sot_sequence(options.task, language, options.timestamps)
    initial += list(options.prefix)
    sample_begin = len(initial)
    budget = min(options.max_new_tokens, bundle.model.n_text_ctx - sample_begin)
    filt = LogitFilter(bundle, options, sample_begin - len(options.prefix))

    state = bundle.model.new_state(encoder_out, valid)
    tokens = torch.tensor([initial], device=device)
    all_logits = bundle.model.step(tokens, state)  # the whole prompt in one forward pass
    no_speech_prob = all_logits[0, sot_index].float().softmax(-1)[sp.no_speech].item()
    first = all_logits[:, -1]
    search = _Search(bundle, state, filt, budget, options)
    out, sum_lp, finished = (_greedy if options.beam_size == 1 else _beam)(search, tokens, first)
    answer = list(options.prefix) + out
    text = tok.decode([t for t in answer if t < sp.eot])
    return DecodingResult(
        tokens=answer,
        text=text,
        language=language,
        avg_logprob=sum_lp / max(1, len(out) + int(finished)),
        no_speech_prob=no_speech_prob,
        compression_ratio=compression_ratio(text),
        finished=finished,
        language_probs=language_probs,
    )


def _pick(logits: Tensor, temperature: float) -> Tensor:
    if temperature > 0:
        return torch.multinomial((logits / temperature).softmax(-1), 1).squeeze(-1)
    return logits.argmax(-1)


@dataclass
class _Search:
    """What greedy and beam search share for one window; each takes it with the prompt tokens (B, T) and the
    logits after them (B, V), and returns (new tokens, their summed log-probability, whether eot ended them)."""

    bundle: WhisperBundle
    state: DecoderState  # the decoder cache, already holding the prompt
    filt: LogitFilter
    budget: int  # new tokens at most
    options: DecodingOptions

    def next_logits(self, tokens: Tensor) -> Tensor:
        """Logits after the last of `tokens`, the one token the cache has not seen yet."""
        return _step(self.bundle, tokens, self.state, n_new=1, use_cache=self.options.use_cache)


def _greedy(search: _Search, tokens: Tensor, logits: Tensor) -> tuple[list[int], float, bool]:
    eot = search.bundle.tokenizer.eot
    budget = search.budget
    out: list[int] = []
    total = 0.0
    for _ in range(budget):
        logits = logits.float()
        search.filt(logits, tokens)
        nxt = _pick(logits, search.options.temperature)
        total += logits.log_softmax(-1)[0, nxt[0]].item()
        if nxt.item() == eot:
            return out, total, True
        out.append(int(nxt.item()))
        tokens = torch.cat([tokens, nxt[:, None]], dim=1)
        if len(out) == budget:
            break
        logits = search.next_logits(tokens)
    return out, total, False


def _beam(search: _Search, tokens: Tensor, logits: Tensor) -> tuple[list[int], float, bool]:
    """Beam search (openai's flavour: patience, length-normalised ranking of finished hypotheses)."""
    eot = search.bundle.tokenizer.eot
    options, state, budget = search.options, search.state, search.budget
    beam = options.beam_size
    n_init = tokens.shape[1]
    state.repeat(beam)
    tokens = tokens.repeat(beam, 1)
    logits = logits.repeat(beam, 1)
    sum_lp = torch.zeros(beam, device=tokens.device)
    sum_lp[1:] = float("-inf")  # all beams start identical: expand only the first
    finished: list[tuple[list[int], float]] = []
    max_finished = round(beam * options.patience)
    for step in range(budget):
        logits = logits.float()
        search.filt(logits, tokens)
        nxt = whisper_beam_step(sum_lp, logits.log_softmax(-1), beam=beam, eot=eot, room=max_finished - len(finished))
        finished += [(tokens[r, n_init:].tolist(), score) for r, score in zip(nxt.ended_rows, nxt.ended_scores)]
        if len(finished) >= max_finished or not nxt.rows or step == budget - 1:
            break
        rows = torch.tensor(nxt.rows, device=tokens.device)
        state.reorder(rows)
        tokens = torch.cat([tokens[rows], torch.tensor(nxt.tokens, device=tokens.device)[:, None]], dim=1)
        sum_lp = torch.tensor(nxt.scores, device=tokens.device)
        logits = search.next_logits(tokens)
    done = True
    if not finished:  # nothing reached eot within the budget: rank the live beams
        done = False
        finished = [(tokens[r, n_init:].tolist(), float(sum_lp[r])) for r in range(len(sum_lp))]
    best, score = max(finished, key=lambda c: c[1] / max(1, len(c[0]) + int(done)))
    return best, score, done
