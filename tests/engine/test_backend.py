"""The Backend seam: the family registry that loading and make_backend() dispatch through, and Whisper's backend
encoding windows of any length, alone or batched."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

import engine.backend
from engine.backend import Family, OfflineOptions, Transcript, families, make_backend, register, transcribe
from engine.errors import ModelLoadError
from engine.models.loading import load_model


@dataclass
class FakeBundle:
    name: str
    family: str = "fake"
    model: torch.nn.Module = field(default_factory=lambda: torch.nn.Linear(1, 1))
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    quantized: bool = False


def _fake_family(**changes) -> Family:
    return Family(
        **{
            "name": "fake",
            "model_types": ("fake-type",),
            "load_directory": lambda path, cfg, name: FakeBundle(name),
            "backend": lambda bundle: ("backend of", bundle.name),
            "transcribe": lambda bundle, audio, options, progress: Transcript(options.language, []),
            **changes,
        }
    )


def test_the_shipped_families_are_registered() -> None:
    """Loading knows Whisper (HF directories and the embedded base) and wav2vec2 + Speech2Text2, by registry."""
    by_name = {f.name: f for f in families()}
    assert by_name["whisper"].model_types == ("whisper",) and "whisper-base" in by_name["whisper"].builtin
    assert by_name["s2t2"].model_types == ("speech-encoder-decoder",) and not by_name["s2t2"].builtin
    assert by_name["whisper"].int8_by_default and not by_name["s2t2"].int8_by_default


def test_make_backend_dispatches_on_the_bundle_family(tiny_whisper_bundle) -> None:
    """A bundle gets its own family's Backend; an object of no registered family is a TypeError."""
    from engine.models.whisper.backend import WhisperBackend

    assert isinstance(make_backend(tiny_whisper_bundle), WhisperBackend)
    with pytest.raises(TypeError, match="no backend for FakeBundle"):
        make_backend(FakeBundle("x", family="unknown"))


def test_a_registered_family_loads_and_serves_without_naming_it_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new family is reached through config.json's model_type and its built-in names, by registering alone."""
    fake = _fake_family(builtin={"fake-builtin": lambda: FakeBundle("built in")})
    monkeypatch.setitem(engine.backend._FAMILIES, "fake", fake)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "fake-type"}))
    bundle = load_model(str(tmp_path), device="cpu")
    assert isinstance(bundle, FakeBundle) and bundle.name == str(tmp_path) and not bundle.quantized
    assert make_backend(bundle) == ("backend of", str(tmp_path))
    assert transcribe(bundle, np.zeros(16000, np.float32), OfflineOptions(language="xx")) == Transcript("xx", [])
    assert load_model("fake-builtin", device="cpu").name == "built in"


def test_an_unknown_model_type_names_every_supported_one(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(
        ModelLoadError, match="unsupported model_type 'bert' \\(supported: 'speech-encoder-decoder', 'whisper'\\)"
    ):
        load_model(str(tmp_path), device="cpu")


def test_a_family_name_is_registered_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registering the same family again is harmless; a different family under a taken name is an error."""
    fake = _fake_family()
    monkeypatch.setitem(engine.backend._FAMILIES, "fake", fake)
    assert register(fake) is fake
    with pytest.raises(ValueError, match="'fake' is registered twice"):
        register(_fake_family(model_types=("other",)))


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
