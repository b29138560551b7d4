"""Loading wav2vec2 + Speech2Text2 checkpoints: file formats, legacy names, hub cache, clear errors, the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.backend import make_backend
from engine.errors import ModelLoadError
from engine.models.loading import load_model
from engine.models.s2t2.generate import translate_window
from tests.s2t2_reference import VARIANTS, build_reference, speech_like

VARIANT = VARIANTS[1]  # layer norm, pre-LN, no projection: the real checkpoint's encoder style
PREFIX = torch.tensor([[0, 5, 9, 20, 21, 7]])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(reference model, checkpoint dir saved as model.safetensors)."""
    ref, _, path = build_reference(tmp_path_factory.mktemp("load"), VARIANT)
    return ref, path


def _logits(path_or_id: str) -> torch.Tensor:
    backend = make_backend(load_model(path_or_id, device="cpu"))
    state = backend.new_state(backend.encode(speech_like(4000, 1)))
    return backend.step(PREFIX, state)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("fmt", ["bin", "sharded-safetensors", "sharded-bin"])
def test_other_weight_formats_load_identically(reference, tmp_path, fmt: str) -> None:
    """pytorch_model.bin (weights_only) and sharded indexes of either format give the same model."""
    ref, path = reference
    kwargs = {"safe_serialization": fmt != "bin" and fmt != "sharded-bin"}
    if fmt.startswith("sharded"):
        kwargs["max_shard_size"] = "40KB"
    out = tmp_path / fmt
    ref.save_pretrained(out, **kwargs)
    for f in path.iterdir():
        if f.suffix in (".json", ".txt") and f.name not in ("config.json",) and "index" not in f.name:
            shutil.copy(f, out / f.name)
    if fmt.startswith("sharded"):
        assert any("index" in f.name for f in out.iterdir())
    torch.testing.assert_close(_logits(str(out)), _logits(str(path)), rtol=0, atol=0)


def test_legacy_weight_norm_names_load(reference, tmp_path) -> None:
    """Checkpoints from before parametrized weight norm (weight_g / weight_v) load to the same model."""
    from safetensors.torch import load_file, save_file

    _, path = reference
    out = _copy(path, tmp_path / "legacy")
    sd = load_file(str(out / "model.safetensors"))
    conv = "encoder.encoder.pos_conv_embed.conv"
    sd[f"{conv}.weight_g"] = sd.pop(f"{conv}.parametrizations.weight.original0")
    sd[f"{conv}.weight_v"] = sd.pop(f"{conv}.parametrizations.weight.original1")
    save_file(sd, str(out / "model.safetensors"))
    torch.testing.assert_close(_logits(str(out)), _logits(str(path)), rtol=0, atol=0)


def _edit_config(path: Path, edit) -> None:
    cfg = json.loads((path / "config.json").read_text())
    edit(cfg)
    (path / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda c: c["encoder"].update(model_type="hubert"), "encoder model_type 'hubert' is not supported"),
        (lambda c: c["decoder"].update(model_type="bart"), "decoder model_type 'bart' is not supported"),
        (lambda c: c["encoder"].update(feat_extract_norm="batch"), "feat_extract_norm is 'batch'"),
        (lambda c: c["encoder"].update(num_attention_heads=5), "not divisible by num_attention_heads 5"),
        (lambda c: c["decoder"].update(decoder_attention_heads=3), "not divisible by decoder_attention_heads 3"),
        (lambda c: c["encoder"].update(conv_kernel=[10, 3]), "equal length"),
        (lambda c: c["decoder"].update(decoder_ffn_dim=41), "decoder_ffn_dim|fc1.weight has shape"),
        (lambda c: c["decoder"].update(decoder_layers=3), "missing weights decoder.layers.2"),
        (lambda c: c.pop("decoder"), "needs 'encoder' and 'decoder' sections"),
        (lambda c: c["decoder"].update(activation_function="mish"), "activation_function 'mish'"),
    ],
)
def test_bad_configs_raise_clear_model_load_errors(reference, tmp_path, edit, message: str) -> None:
    """An unsupported or inconsistent config.json is a ModelLoadError that says what is wrong."""
    out = _copy(reference[1], tmp_path / "bad")
    _edit_config(out, edit)
    with pytest.raises(ModelLoadError, match=message):
        load_model(str(out), device="cpu")


def test_missing_files_raise_clear_errors(reference, tmp_path) -> None:
    """No weights, no vocabulary or a non-16 kHz front end are ModelLoadErrors naming the file."""
    path = reference[1]
    no_weights = _copy(path, tmp_path / "w")
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="no model.safetensors or pytorch_model.bin"):
        load_model(str(no_weights), device="cpu")
    no_vocab = _copy(path, tmp_path / "v")
    (no_vocab / "vocab.json").unlink()
    with pytest.raises(ModelLoadError, match="no vocab.json"):
        load_model(str(no_vocab), device="cpu")
    rate = _copy(path, tmp_path / "r")
    pre = json.loads((rate / "preprocessor_config.json").read_text())
    (rate / "preprocessor_config.json").write_text(json.dumps({**pre, "sampling_rate": 8000}))
    with pytest.raises(ModelLoadError, match="sampling_rate 8000"):
        load_model(str(rate), device="cpu")


def _fake_hub_cache(hub: Path, repo_id: str, files: Path) -> None:
    """The huggingface_hub cache layout: blobs, a snapshot of symlinks, refs/main naming the commit."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = hub / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for i, f in enumerate(sorted(files.iterdir())):
        blob = repo / "blobs" / f"blob{i:04d}"
        shutil.copy(f, blob)
        (snap / f.name).symlink_to(Path("..") / ".." / "blobs" / blob.name)


def test_hub_id_loads_offline_from_the_hub_cache(reference, tmp_path, monkeypatch) -> None:
    """A hub id present in the local hub cache loads with HF_HUB_OFFLINE=1, the same model as the directory."""
    import huggingface_hub.constants as hub_constants

    _, path = reference
    hub = tmp_path / "hf_home" / "hub"
    _fake_hub_cache(hub, "fake-org/tiny-s2t2", path)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    bundle = load_model("fake-org/tiny-s2t2", device="cpu")
    assert bundle.family == "s2t2" and bundle.name == "fake-org/tiny-s2t2"
    torch.testing.assert_close(_logits("fake-org/tiny-s2t2"), _logits(str(path)), rtol=0, atol=0)
    with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE is set"):
        load_model("fake-org/not-cached", device="cpu")


def test_translate_window_handles_edge_lengths(reference) -> None:
    """Empty audio gives empty text; audio shorter than one frame still decodes (padded, not an error)."""
    bundle = load_model(str(reference[1]), device="cpu")
    assert translate_window(bundle, np.zeros(0, dtype=np.float32), 1) == ""
    assert isinstance(translate_window(bundle, speech_like(100, 4), 1), str)


def test_a_long_recording_is_translated_in_windows_cut_in_pauses(reference) -> None:
    """Offline decoding past 30 s: contiguous windows, each cut in the middle of the quietest 0.1 s of its last
    5 s, each with its own window's translation; the language stays the one given."""
    from engine.backend import OfflineOptions, transcribe

    bundle = load_model(str(reference[1]), device="cpu")
    audio = speech_like(16000 * 40, 9)
    audio[16000 * 27 : 16000 * 27 + 1600] = 0  # a 0.1 s pause at 27 s
    done: list[float] = []
    result = transcribe(
        bundle,
        audio,
        OfflineOptions(task="translate", language="en", beam_size=1),
        lambda seconds, total: done.append(seconds),
    )
    assert [(s.start_s, s.end_s) for s in result.segments] == [(0.0, 27.05), (27.05, 40.0)]
    assert result.segments[0].text == translate_window(bundle, audio[: int(16000 * 27.05)], 1)
    assert result.language == "en" and done == [27.05, 40.0]


def test_file_command_translates_with_a_checkpoint(reference, tmp_path, capsys) -> None:
    """`dragoman file AUDIO --model DIR` prints the reference translation of a short recording."""
    import warnings

    import soundfile as sf

    from app.cli import main

    ref, path = reference
    audio = speech_like(16000, 8)
    wav = tmp_path / "clip.wav"
    sf.write(str(wav), audio, 16000, subtype="FLOAT")
    assert main(["file", str(wav), "--model", str(path), "--beam", "2", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out.strip()
    from transformers import Speech2Text2Tokenizer, Wav2Vec2FeatureExtractor

    inputs = Wav2Vec2FeatureExtractor.from_pretrained(path)(audio, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ids = ref.generate(
            inputs.input_values, attention_mask=inputs.attention_mask, num_beams=2, max_length=200, do_sample=False
        )[0]
    assert printed == Speech2Text2Tokenizer.from_pretrained(path).decode(ids, skip_special_tokens=True).strip()
