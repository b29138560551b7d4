"""Several streams' decoder jobs in shared forward passes: each prefix alone, then every generation step batched.

Rows are independent: batched and unbatched decoding give the same tokens (up to float rounding).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..backend import Backend
from ..kv_cache import DecoderState
from .decoder import DecodeJob, DecodeResult, backend_ctx, beam_search


def decode_batch(backend: Backend, jobs: list[DecodeJob]) -> list[DecodeResult]:
    """Drive several streams' jobs: each prefix alone, then every generation step batched across the streams.

    Prefixes differ in length and in what is cached, so each runs on its own state (one forward pass each);
    the many one-token steps after it are where batching pays. The active rows' caches are merged once,
    left-padded to a common length (DecoderState.left_pad) with each row's encoder frames masked
    (cross_valid); a row that finishes gets its cache back and leaves the batch. Rows are independent:
    batched and unbatched decoding give the same tokens (up to float rounding).
    """
    with torch.inference_mode():
        active: list[tuple[DecodeJob, int]] = []
        for job in jobs:
            if job.beam_size > 1:
                beam_search(backend, job, job.prefill()[0])
                continue
            tok = job.start()
            if tok is not None:
                active.append((job, tok))
        if len(active) == 1:
            job, tok = active[0]
            device = job.state.device
            while tok is not None:
                logits, att = backend.step_with_alignment(torch.tensor([[tok]], device=device), job.state)
                tok = job.accept(logits[0, -1], att[0, :, -1] if att is not None and att.numel() else None)
        elif active:
            _run_merged(backend, active)
        return [job.result() for job in jobs]


def _run_merged(backend: Backend, active: list[tuple[DecodeJob, int]]) -> None:
    states = [job.state for job, _ in active]
    batch = merge_states(states)
    ctx = backend_ctx(backend)
    for job, _ in active:  # the batch's cache is as long as its longest row: keep every row inside the context
        job.budget = min(job.budget, len(job.out) + ctx - batch.offset - 1)
    device = batch.device
    valid = [job.n_valid for job, _ in active]
    toks = [tok for _, tok in active]
    rows = list(range(len(active)))  # row of the batch -> index into `active`
    while rows:
        logits, att = backend.step_with_alignment(torch.tensor([[t] for t in toks], device=device), batch)
        keep, next_toks = [], []
        for b, i in enumerate(rows):
            job = active[i][0]
            a = att[b, :, -1, : valid[i]] if att is not None and att.numel() else None
            tok = job.accept(logits[b, -1], a)
            if tok is None:
                split_row(batch, b, job.state)
            else:
                keep.append(b)
                next_toks.append(tok)
        if len(keep) < len(rows):
            if keep:
                batch.reorder(torch.tensor(keep, device=device))
            rows = [rows[b] for b in keep]
        toks = next_toks


def merge_states(states: list[DecoderState]) -> DecoderState:
    """One batch state from single-row states: self caches left-padded to the longest, encoder frames masked."""
    n_layers = states[0].n_layers
    t_max = max(st.offset for st in states)
    s_max = max(st.n_frames for st in states)
    device = states[0].device
    valid = torch.zeros(len(states), s_max, dtype=torch.bool, device=device)
    for i, st in enumerate(states):
        n = st.n_frames
        valid[i, :n] = st.cross_valid[0, :n] if st.cross_valid is not None else True

    def pad_to(x: Tensor, n: int, left: bool) -> Tensor:  # (1, H, T, D) -> (1, H, n, D)
        if x.shape[2] == n:
            return x
        z = x.new_zeros(x.shape[0], x.shape[1], n - x.shape[2], x.shape[3])
        return torch.cat([z, x] if left else [x, z], dim=2)

    out = DecoderState(n_layers=n_layers)
    for layer in range(n_layers):
        if t_max:
            caches = [st.self_cache(layer) for st in states]
            out.self_k[layer] = torch.cat([pad_to(k, t_max, True) for k, _ in caches])
            out.self_v[layer] = torch.cat([pad_to(v, t_max, True) for _, v in caches])
    crosses = [[st.cross_cache(layer) for st in states] for layer in range(n_layers)]
    out.cross_k = [torch.cat([pad_to(k, s_max, False) for k, _ in layer]) for layer in crosses]
    out.cross_v = [torch.cat([pad_to(v, s_max, False) for _, v in layer]) for layer in crosses]
    out.cross_valid = None if bool(valid.all()) else valid
    out.offset = t_max
    out.left_pad = torch.tensor([t_max - st.offset for st in states], dtype=torch.long, device=device)
    return out


def split_row(batch: DecoderState, row: int, into: DecoderState) -> None:
    """Copy one batch row's self cache (without its left padding) back into that stream's own state."""
    pad = int(batch.left_pad[row]) if batch.left_pad is not None else 0
    for layer in range(batch.n_layers):
        k, v = batch.self_cache(layer)
        into.self_k[layer] = k[row : row + 1, :, pad:].clone()
        into.self_v[layer] = v[row : row + 1, :, pad:].clone()
    into.offset = batch.offset - pad
