"""The INT8 model step (worker/int8.py): its own model id, a compiled program that a new
worker reloads from disk with the same vectors, real quantized kernels, and clear refusals.

One ResNet50 (seeded random weights) is quantized and compiled once for the module:
about a minute of CPU, the price of testing the program a worker really runs.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from changewatch.settings import Settings
from changewatch.worker import int8
from changewatch.worker.embed import Embedder, model_id_for
from changewatch.worker.score import cosine_distance

# The compiled program's OpenMP runtime slows eager torch after it: last (tests/conftest.py).
pytestmark = pytest.mark.compiled_int8


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh model cache; Inductor's cache dir (which the worker points into it) comes
    back as it was for the tests after these."""
    before = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    try:
        yield tmp_path_factory.mktemp("model-cache")
    finally:
        if before is None:
            os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
        else:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = before


@pytest.fixture(scope="module")
def quantized(cache: Path) -> Embedder:
    embedder = Embedder("random", "int8", model_cache=str(cache))
    embedder.setup("cpu")  # no artifact yet: quantizes, compiles and saves it
    return embedder


def photos(count: int) -> np.ndarray:
    """Smooth images, closer to photos than uniform noise: 224x224 gradients and blocks."""
    rng = np.random.default_rng(5)
    ramp = np.linspace(0, 255, 224, dtype=np.float32)
    out = np.empty((count, 224, 224, 3), np.uint8)
    for i in range(count):
        base = ramp[None, :, None] * rng.uniform(0.3, 1.0, 3) + rng.uniform(0, 60, 3)
        image = np.repeat(base, 224, axis=0)
        y, x = rng.integers(0, 160, 2)
        image[y : y + 64, x : x + 64] = rng.uniform(0, 255, 3)
        out[i] = np.clip(image, 0, 255)
    return out


def test_int8_model_id_names_its_precision() -> None:
    """INT8 and float scores of one person never share a history: different ids; fp32 and
    bf16 keep the id every stored history has."""
    base = "resnet50/random-seed0/prep1"
    assert model_id_for("random", "resnet50", "int8") == f"{base}/int8-cal1"
    assert model_id_for("random", "resnet50", "bf16") == base
    assert model_id_for("random", "resnet50", "auto") == base
    assert model_id_for("random") == base


def test_precision_setting_accepts_int8_and_refuses_unknown() -> None:
    assert Settings.from_env({"CHANGEWATCH_PRECISION": "int8"}).precision == "int8"
    with pytest.raises(ValueError, match="CHANGEWATCH_PRECISION"):
        Settings.from_env({"CHANGEWATCH_PRECISION": "int4"})
    with pytest.raises(ValueError, match="CHANGEWATCH_PRECISION"):
        Embedder("random", "int4")


def test_compiled_program_uses_quantized_convolutions(quantized: Embedder) -> None:
    """INT8 that runs as dequantize + fp32 conv is slower than bf16: the program must call
    oneDNN's qconv (lowered with freezing)."""
    path = quantized.prepare_int8()
    assert path.is_file() and path.suffix == ".pt2"
    assert int8.uses_quantized_kernels(path)


def test_any_number_of_photos_runs_through_the_session_sized_program(
    quantized: Embedder,
) -> None:
    """The program is compiled for batches of one session (int8.BATCH); one photo, four or
    ten are split and padded to it, and each photo gets the vector it gets in a full batch
    (the padding never leaks into a real row)."""
    images = photos(2 * int8.BATCH)
    full = quantized.features(images)
    for count in (1, 4, 10):
        part = quantized.features(images[:count])
        assert part.vectors.shape == (count, full.vectors.shape[1])
        np.testing.assert_allclose(part.vectors, full.vectors[:count], rtol=1e-5, atol=1e-6)
        # Region vectors go through float steps after the trunk: rounding, nothing more.
        np.testing.assert_allclose(part.regions, full.regions[:count], rtol=1e-4, atol=1e-4)


def test_int8_vectors_follow_the_float_model(quantized: Embedder) -> None:
    """The same photos through fp32 and INT8: the vectors point the same way."""
    images = photos(6)
    full = Embedder("random", "fp32")
    full.setup("cpu")
    a, b = quantized.features(images), full.features(images)
    assert a.vectors.shape == b.vectors.shape == (6, 2048)
    assert a.regions.shape == b.regions.shape
    for x, y in zip(a.vectors, b.vectors, strict=True):
        assert cosine_distance(x, y) < 0.02


def test_a_new_worker_reloads_the_cached_program_in_seconds(
    quantized: Embedder, cache: Path
) -> None:
    """The artifact on disk is what a worker start loads: no compile, the same vectors,
    any batch size (one program for batches of int8.BATCH, others split and padded)."""
    started = time.perf_counter()
    again = Embedder("random", "int8", model_cache=str(cache))
    again.setup("cpu")
    assert time.perf_counter() - started < 30  # a compile takes about a minute here
    assert again.model_id == quantized.model_id
    for count in (1, 6, 9):
        images = photos(count)
        np.testing.assert_allclose(
            again.predict(images), quantized.predict(images), rtol=1e-4, atol=1e-4
        )


def test_lite0_int8_is_refused_with_the_measured_reason(tmp_path: Path) -> None:
    """Lite0's INT8 scores moved by more than 0.01 on the validity set: a worker refuses
    to start with it, before any compiling, and says why."""
    embedder = Embedder("random", "int8", model="efficientnet_lite0", model_cache=str(tmp_path))
    with pytest.raises(int8.Int8Unavailable, match=r"refused for efficientnet_lite0.*0\.01"):
        embedder.setup("cpu")
    assert not any(tmp_path.iterdir())


def test_missing_torchao_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No silent fallback to fp32 under an INT8 id: without torchao the worker stops."""
    monkeypatch.setitem(sys.modules, "torchao.quantization.pt2e", None)
    embedder = Embedder("random", "int8", model_cache=str(tmp_path))
    with pytest.raises(int8.Int8Unavailable, match="torchao"):
        embedder.setup("cpu")


def test_artifact_key_names_torch_model_and_cpu(tmp_path: Path) -> None:
    """Another model id or another CPU ISA never loads this program."""
    a = int8.artifact_path("resnet50/random-seed0/prep1/int8-cal1", tmp_path)
    b = int8.artifact_path("resnet50/file-0123/prep1/int8-cal1", tmp_path)
    assert a != b and a.parent == b.parent == tmp_path / "models"
    assert int8.cpu_isa()
