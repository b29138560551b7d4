"""The Whisper backend seam: encoding windows of any length, alone or batched."""
from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.mark.parametrize("n_samples", [0, 1, 159, 320, 16000])
def test_any_window_length_encodes(backend, n_samples):
    """Windows from empty to a second encode to at least one frame (100 samples per mel frame pair → 1 frame)."""
    out = backend.encode(np.zeros(n_samples, np.float32))
    assert out.shape[0] == 1 and out.shape[1] == max(1, n_samples // 320) and torch.isfinite(out).all()


def test_batched_rows_equal_their_lone_encoding(backend, audio_dir):
    """Rows of different lengths in one encoder pass give exactly their lone output on their real frames."""
    from tests.speech import speech

    a, _ = speech("en", 1, audio_dir)
    rows = [a[:32000], a[:20000]]
    batch, valid = backend.encode_batch(rows)
    assert valid is not None and valid.sum(1).tolist() == [100, 62]
    for i, row in enumerate(rows):
        alone = backend.encode(row)[0]
        n = alone.shape[0]
        torch.testing.assert_close(batch[i, :n], alone, atol=1e-4, rtol=1e-4)
