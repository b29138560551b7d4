"""Loading checkpoints: HF-format Whisper directories written by transformers, hub ids without a network, and
the embedded model's safetensors cache (built once, reused, rebuilt when torn)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from engine.errors import ModelLoadError
from engine.models.loading import load_model
from engine.models.whisper import ct2 as ct2_module
from engine.models.whisper.load import WhisperBundle, _embedded_files, load_embedded
from tests import REPO


def _tiny_hf_config():
    from transformers import WhisperConfig

    return WhisperConfig(
        vocab_size=51865,
        num_mel_bins=80,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_source_positions=30,
        max_target_positions=40,
        decoder_start_token_id=50258,
        pad_token_id=50257,
        bos_token_id=50257,
        eos_token_id=50257,
    )


@pytest.fixture(scope="module")
def hf_reference():
    """A tiny random transformers Whisper (seeded; the real 51865-token vocabulary)."""
    from transformers import WhisperForConditionalGeneration

    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(_tiny_hf_config()).eval()
    with torch.no_grad():  # transformers zero-initialises biases and LayerNorm shifts; make every weight count
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _write_checkpoint(model, directory: Path, **save_kwargs) -> Path:
    """model.save_pretrained + the embedded tokenizer.json + a generation config with suppression lists and
    alignment heads (where openai/whisper-* on the hub keep them)."""
    model.save_pretrained(directory, **save_kwargs)
    data_dir, _ = _embedded_files()
    shutil.copy(data_dir / "tokenizer.json", directory / "tokenizer.json")
    gen = json.loads((directory / "generation_config.json").read_text())
    gen.update(alignment_heads=[[1, 0], [1, 3]], suppress_tokens=[1, 2, 7, 8], begin_suppress_tokens=[220, 50257])
    (directory / "generation_config.json").write_text(json.dumps(gen))
    return directory


@pytest.fixture(scope="module")
def checkpoint(hf_reference, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_checkpoint(hf_reference, tmp_path_factory.mktemp("tiny-whisper"))


def _assert_matches_transformers(bundle: WhisperBundle, reference) -> None:
    torch.manual_seed(1)
    features = torch.randn(1, 80, 60)
    tokens = torch.tensor([[50258, 50261, 50358, 50363, 1770, 13, 383, 2068]])
    with torch.inference_mode():
        ours = bundle.model.step(tokens, bundle.model.new_state(bundle.model.encode(features)))
        theirs = reference(input_features=features, decoder_input_ids=tokens).logits
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


# -- HF-format directories -----------------------------------------------------------------------------------
def test_hf_directory_loads_and_matches_transformers(checkpoint: Path, hf_reference) -> None:
    """A checkpoint written by transformers' save_pretrained loads by path and gives transformers' logits."""
    bundle = load_model(str(checkpoint), device="cpu", quantize="none")
    assert bundle.name == str(checkpoint) and not bundle.quantized
    assert bundle.model.config.n_text_layer == 2 and bundle.model.config.n_audio_ctx == 30
    _assert_matches_transformers(bundle, hf_reference)


def test_hf_directory_carries_decoding_metadata(checkpoint: Path) -> None:
    """Suppression lists and alignment heads come from the checkpoint's config and generation_config."""
    bundle = load_model(str(checkpoint), device="cpu", quantize="none")
    assert bundle.suppress_ids == (1, 2, 7, 8)
    assert bundle.suppress_ids_begin == (220, 50257)
    assert bundle.model.config.alignment_heads == ((1, 0), (1, 3))
    assert bundle.tokenizer.special.sot == 50258


def test_hf_directory_gets_the_int8_decoder_by_default(checkpoint: Path, hf_reference) -> None:
    """On the CPU the default quantizes the decoder; its logits stay close to fp32's, the encoder is untouched."""
    bundle = load_model(str(checkpoint), device="cpu")
    assert bundle.quantized
    assert isinstance(bundle.model.encoder.blocks[0].mlp[0], torch.nn.Linear)
    torch.manual_seed(1)
    features = torch.randn(1, 80, 60)
    tokens = torch.tensor([[50258, 50261, 50358, 50363, 1770, 13]])
    with torch.inference_mode():
        ours = bundle.model.step(tokens, bundle.model.new_state(bundle.model.encode(features)))
        theirs = hf_reference(input_features=features, decoder_input_ids=tokens).logits
    assert (ours - theirs).abs().max() < 0.05 * theirs.abs().max()


@pytest.mark.parametrize(
    "save_kwargs",
    [{"max_shard_size": "1MB"}, {"safe_serialization": False}],
    ids=["sharded-safetensors", "pytorch_model.bin"],
)
def test_hf_directory_in_other_weight_layouts(hf_reference, tmp_path: Path, save_kwargs: dict) -> None:
    """Sharded safetensors (with an index) and pytorch_model.bin checkpoints load to the same logits."""
    directory = _write_checkpoint(hf_reference, tmp_path / "ckpt", **save_kwargs)
    names = {p.name for p in directory.iterdir()}
    assert (
        ("model.safetensors.index.json" in names) if "max_shard_size" in save_kwargs else ("pytorch_model.bin" in names)
    )
    _assert_matches_transformers(load_model(str(directory), device="cpu", quantize="none"), hf_reference)


def _broken_copy(checkpoint: Path, tmp_path: Path) -> Path:
    target = tmp_path / "broken"
    shutil.copytree(checkpoint, target)
    return target


def test_broken_directories_raise_model_load_error(checkpoint: Path, tmp_path: Path) -> None:
    """Missing config/weights/tokenizer, bad JSON, a foreign model type or mismatched shapes each raise
    ModelLoadError that names the problem."""
    cases: list[tuple[str, Callable[[Path], object]]] = [
        ("no config.json", lambda d: (d / "config.json").unlink()),
        ("not valid JSON", lambda d: (d / "config.json").write_text("{oops")),
        ("unsupported model_type", lambda d: (d / "config.json").write_text(json.dumps({"model_type": "bert"}))),
        ("no model.safetensors", lambda d: (d / "model.safetensors").unlink()),
        ("no tokenizer.json", lambda d: (d / "tokenizer.json").unlink()),
        ("lacks the Whisper field", lambda d: _edit_config(d, lambda c: c.pop("d_model"))),
        ("do not match", lambda d: _edit_config(d, lambda c: c.update(max_target_positions=50))),
        ("ffn_dim=64 is unsupported", lambda d: _edit_config(d, lambda c: c.update(decoder_ffn_dim=64))),
        ("cannot read weights", lambda d: (d / "model.safetensors").write_bytes(b"\x00" * 64)),
    ]
    for i, (message, breakage) in enumerate(cases):
        directory = _broken_copy(checkpoint, tmp_path / str(i))
        breakage(directory)
        with pytest.raises(ModelLoadError, match=message):
            load_model(str(directory), device="cpu", quantize="none")


def _edit_config(directory: Path, edit) -> None:
    cfg = json.loads((directory / "config.json").read_text())
    edit(cfg)
    (directory / "config.json").write_text(json.dumps(cfg))


def test_missing_local_path_raises(tmp_path: Path) -> None:
    """A path-like name that does not exist is reported as a missing directory, not looked up on the hub."""
    with pytest.raises(ModelLoadError, match="not found"):
        load_model(str(tmp_path / "no" / "such" / "model"), device="cpu")


# -- hub ids without a network -------------------------------------------------------------------------------
def _load_in_subprocess(
    name: str, env_overrides: dict[str, str], tmp_path: Path
) -> tuple[subprocess.CompletedProcess, float]:
    """load_model(name) in a fresh interpreter, so huggingface_hub reads the environment at import."""
    env = {
        **os.environ,
        "HF_HOME": str(tmp_path / "hf-home"),
        "XDG_CACHE_HOME": str(tmp_path / "xdg"),
        "PYTHONPATH": str(REPO),
        **env_overrides,
    }
    code = (
        "from engine.errors import ModelLoadError\n"
        "from engine.models.loading import load_model\n"
        "try:\n"
        f"    load_model({name!r}, device='cpu')\n"
        "except ModelLoadError as e:\n"
        "    print('ModelLoadError:', e)\n"
    )
    t0 = time.monotonic()
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    return run, time.monotonic() - t0


@pytest.mark.parametrize(
    "env",
    [
        {"HF_HUB_OFFLINE": "1"},
        # network on but nothing listening: the download fails at once with connection refused
        {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"},
    ],
    ids=["HF_HUB_OFFLINE", "unreachable-endpoint"],
)
def test_hub_id_without_network_fails_fast_naming_offline_alternatives(tmp_path: Path, env: dict[str, str]) -> None:
    """A hub id that is not cached, with the hub unreachable, gives ModelLoadError naming the embedded model and
    a local directory as alternatives, within seconds (no hang, no traceback)."""
    run, seconds = _load_in_subprocess("openai/whisper-tiny", env, tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    out = run.stdout
    assert "ModelLoadError:" in out and "openai/whisper-tiny" in out
    assert "Offline alternatives" in out and "whisper-base" in out and "directory" in out
    assert seconds < 30, f"took {seconds:.1f} s"


def test_hub_id_loads_from_a_populated_local_hub_cache(
    checkpoint: Path, hf_reference, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With HF_HUB_OFFLINE=1, a hub id already in the local hub cache loads from there."""
    import huggingface_hub

    snapshot = tmp_path / "snapshot"
    shutil.copytree(checkpoint, snapshot)
    calls: list[dict] = []

    def fake_snapshot_download(repo_id: str, **kwargs):
        calls.append({"repo_id": repo_id, **kwargs})
        if kwargs.get("local_files_only"):
            return str(snapshot)
        raise AssertionError("must not go to the network when the cache has the model")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    bundle = load_model("someone/tiny-whisper", device="cpu", quantize="none")
    assert bundle.name == "someone/tiny-whisper"
    assert calls and calls[0]["repo_id"] == "someone/tiny-whisper"
    _assert_matches_transformers(bundle, hf_reference)


# -- the embedded model's cache ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fresh_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty XDG_CACHE_HOME into which the embedded model is converted once (a few seconds)."""
    cache = tmp_path_factory.mktemp("xdg-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(cache))
        load_embedded()
    return cache


def _cached_weights(cache: Path) -> Path:
    (weights,) = (cache / "dragoman" / "models").glob("whisper-base-ct2-*/model.safetensors")
    return weights


@pytest.mark.slow
def test_first_load_converts_into_the_cache(fresh_cache: Path, whisper_bundle_fp32: WhisperBundle) -> None:
    """The first start writes safetensors and config under $XDG_CACHE_HOME/dragoman with the same weights as the
    user's cached model (the conversion is deterministic)."""
    from safetensors.torch import load_file

    weights = _cached_weights(fresh_cache)
    assert (weights.parent / "config.json").is_file()
    assert not list(weights.parent.glob("*.tmp"))  # the atomic write left no temporary behind
    converted = load_file(str(weights))
    reference = whisper_bundle_fp32.model.state_dict()
    assert converted.keys() <= reference.keys()
    for name, tensor in converted.items():
        assert torch.equal(tensor, reference[name]), name


@pytest.mark.slow
def test_second_load_uses_the_cache(
    fresh_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With the cache in place the CT2 files are not read again, nothing is printed or logged as converting, and
    the load is quick."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(fresh_cache))

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again although the cache was valid")

    monkeypatch.setattr(ct2_module, "read_ct2", no_conversion)
    t0 = time.perf_counter()
    bundle = load_model(device="cpu", quantize="none")
    seconds = time.perf_counter() - t0
    assert bundle.model.config.n_text_layer == 6
    assert capsys.readouterr().err == ""
    assert "converting" not in caplog.text
    assert seconds < 10  # ~0.2 s on a quiet 2-core machine; generous for a loaded CI box


@pytest.mark.slow
def test_corrupt_cache_is_rebuilt(
    fresh_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    whisper_bundle_fp32: WhisperBundle,
) -> None:
    """A torn cache file (as after a crash mid-write) is detected, converted again (saying so in the log) and
    replaced."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(fresh_cache))
    weights = _cached_weights(fresh_cache)
    weights.write_bytes(weights.read_bytes()[: 1 << 20])  # the first MiB of a ~290 MB file
    bundle = load_model(device="cpu", quantize="none")
    assert "converting the embedded Whisper base model" in caplog.text
    assert weights.stat().st_size > 100 << 20
    ours = bundle.model.state_dict()
    for name, tensor in whisper_bundle_fp32.model.state_dict().items():
        assert torch.equal(ours[name], tensor), name


def test_loading_leaves_torch_initialisation_alone(checkpoint: Path) -> None:
    """Building without random initial weights is scoped to the load: modules built afterwards are random again,
    and the loaded output projection is tied to the token embedding (one tensor, not a copy)."""
    bundle = load_model(str(checkpoint), device="cpu", quantize="none")
    assert bundle.model.decoder.proj.weight is bundle.model.decoder.token_embedding.weight
    for module in (torch.nn.Linear(64, 64), torch.nn.Conv1d(4, 64, 3), torch.nn.Embedding(64, 64)):
        assert module.weight.std() > 0.01
    assert torch.equal(torch.nn.LayerNorm(8).weight, torch.ones(8))


@pytest.mark.slow
def test_a_missing_model_part_is_reported_as_truncated() -> None:
    """Reading only the first of the two embedded model.bin parts (a part missing, like the truncated PyPI
    Whisper small) raises ModelLoadError, not a struct or numpy error."""
    _, parts = _embedded_files()
    with open(parts[0], "rb") as f, pytest.raises(ModelLoadError, match="truncated"):
        ct2_module.read_ct2([f])


def test_building_without_random_init_is_confined_to_its_thread() -> None:
    """While one thread builds a model to receive checkpoint weights, torch.nn's classes stay unpatched and a
    module built on another thread still gets random initial weights."""
    import threading

    from engine.models.checkpoint import no_random_init

    before = {cls: dict(cls.__dict__) for cls in (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Embedding)}
    built: list[torch.nn.Linear] = []
    with no_random_init():
        skipped = torch.nn.Linear(64, 64)
        worker = threading.Thread(target=lambda: built.append(torch.nn.Linear(64, 64)))
        worker.start()
        worker.join()
        assert {cls: dict(cls.__dict__) for cls in before} == before
    assert built[0].weight.std() > 0.01
    assert skipped.weight.shape == (64, 64)


def test_an_unreachable_hub_leaves_the_environment_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed download raises ModelLoadError without setting environment variables for the rest of the process."""
    import huggingface_hub

    def unreachable(repo_id: str, **kwargs):
        raise (FileNotFoundError("not cached") if kwargs.get("local_files_only") else ConnectionError("refused"))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", unreachable)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("HF_HUB_ETAG_TIMEOUT", raising=False)
    monkeypatch.delenv("HF_HUB_DOWNLOAD_TIMEOUT", raising=False)
    before = dict(os.environ)
    with pytest.raises(ModelLoadError, match="Offline alternatives"):
        load_model("someone/unreachable", device="cpu")
    assert dict(os.environ) == before


def test_a_whole_window_is_encoded_in_bf16_only_when_asked_and_native(checkpoint: Path, monkeypatch) -> None:
    """Whisper.encode(bf16=True) (the whole-window retry's pass) runs a whole trained window in bf16 where the CPU
    has it natively: close to fp32 and returned as fp32; a shorter window, a CPU without it, and every encode
    that does not ask stay exact."""
    import engine.models.whisper.model as whisper_model

    model = load_model(str(checkpoint), device="cpu", quantize="decoder").model
    torch.manual_seed(2)
    whole, short = torch.randn(1, 80, 60), torch.randn(1, 80, 40)  # the tiny model's window: 60 mel frames
    monkeypatch.setattr(whisper_model, "native_bf16", lambda: True)
    with torch.inference_mode():
        exact_whole, exact_short = model.encode(whole), model.encode(short)
        fast_whole, fast_short = model.encode(whole, bf16=True), model.encode(short, bf16=True)
        monkeypatch.setattr(whisper_model, "native_bf16", lambda: False)
        emulated = model.encode(whole, bf16=True)
    assert fast_whole.dtype == torch.float32
    assert 0 < float((fast_whole - exact_whole).norm() / exact_whole.norm()) < 0.05
    torch.testing.assert_close(fast_short, exact_short, rtol=0, atol=0)
    torch.testing.assert_close(emulated, exact_whole, rtol=0, atol=0)
