"""The model holder: weights are loaded for real or refused clearly, and tagged exactly (a
worker process refusing to start without them is in tests/integration/test_model.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.models import resnet50

from changewatch.worker.embed import EMBEDDING_DIM, Embedder, WeightsUnavailable
from changewatch.worker.score import cosine_distance


@pytest.fixture(scope="module")
def random_embedder() -> Embedder:
    embedder = Embedder("random")
    embedder.setup("cpu")
    return embedder


def test_random_weights_are_seeded_and_tagged(random_embedder: Embedder) -> None:
    """Two workers with 'random' produce identical embeddings, and the id says 'random'."""
    other = Embedder("random")
    other.setup("cpu")
    batch = np.random.default_rng(1).integers(0, 255, (2, 224, 224, 3), dtype=np.uint8)
    a, b = random_embedder.predict(batch), other.predict(batch)
    assert a.shape == (2, EMBEDDING_DIM) and a.dtype == np.float32
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert random_embedder.model_id == "resnet50/random-seed0/prep1"


def test_weights_file_is_loaded_and_identified_by_its_digest(
    tmp_path: Path, random_embedder: Embedder
) -> None:
    """A local weights file is the offline way to run real weights; its hash names the model."""
    torch.manual_seed(3)
    path = tmp_path / "resnet50.pth"
    torch.save(resnet50(weights=None).state_dict(), path)
    embedder = Embedder(str(path))
    embedder.setup("cpu")
    assert embedder.model_id.startswith("resnet50/file-") and embedder.model_id.endswith("/prep1")
    batch = np.full((1, 224, 224, 3), 128, np.uint8)
    assert not np.allclose(embedder.predict(batch), random_embedder.predict(batch))


@pytest.mark.parametrize("content", [None, b"not a checkpoint", "wrong-shape"])
def test_missing_or_wrong_weights_file_is_refused(tmp_path: Path, content: object) -> None:
    """A worker must not start on weights it cannot load, and must say why."""
    path = tmp_path / "weights.pth"
    if content == "wrong-shape":
        torch.save({"conv1.weight": torch.zeros(1)}, path)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(WeightsUnavailable, match=r"weights\.pth|CHANGEWATCH_MODEL_WEIGHTS"):
        Embedder(str(path)).setup("cpu")


def test_imagenet_weights_load_or_fail_with_instructions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without network or cached weights the error says where to put the file."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    embedder = Embedder("imagenet")
    try:
        embedder.setup("cpu")
    except WeightsUnavailable as exc:
        assert "resnet50-" in str(exc) and "CHANGEWATCH_MODEL_WEIGHTS" in str(exc)
    else:  # a machine with network access downloaded them
        assert embedder.model_id == "resnet50/imagenet1k_v2/prep1"


def test_cuda_requested_without_a_gpu_is_an_error() -> None:
    """CHANGEWATCH_DEVICE=cuda must not quietly run on the CPU."""
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="no CUDA device"):
        Embedder("random").setup("cuda")


def test_bf16_autocast_stays_close_to_fp32(random_embedder: Embedder) -> None:
    """The fast path's precision must not move embeddings more than photos differ."""
    batch = np.random.default_rng(2).integers(0, 255, (4, 224, 224, 3), dtype=np.uint8)
    fast, exact = random_embedder.predict(batch), random_embedder.predict(batch, fp32=True)
    distances = [cosine_distance(a, b) for a, b in zip(fast, exact, strict=True)]
    # Two different real photos are ~6e-5..1e-3 apart under these random weights.
    assert max(distances) < 5e-5, distances


def test_folded_batchnorm_gives_the_seeds_embeddings(random_embedder: Embedder) -> None:
    """The fast pipeline's model (BatchNorm folded into the convs) must embed photos as the
    seed's unfolded ResNet50 does, or scores would drift between the two."""
    assert random_embedder.fold_batchnorm
    seed = Embedder("random", fold_batchnorm=False)
    seed.setup("cpu")
    batch = np.random.default_rng(4).integers(0, 255, (3, 224, 224, 3), dtype=np.uint8)
    for fp32 in (True, False):
        folded, unfolded = random_embedder.predict(batch, fp32=fp32), seed.predict(batch, fp32=fp32)
        distances = [cosine_distance(a, b) for a, b in zip(folded, unfolded, strict=True)]
        assert max(distances) < 1e-5, (fp32, distances)


def _photo_batch(*names: str) -> np.ndarray:
    from bench.harness.services import PHOTOS
    from changewatch.worker.decode import preprocess
    from tests.helpers import require

    paths = [PHOTOS / name for name in names]
    require(all(p.is_file() for p in paths), f"real photos not found under {PHOTOS}")
    return np.stack([preprocess(p.read_bytes()) for p in paths])


def test_efficientnet_lite0_ships_real_imagenet_weights() -> None:
    """The embedded model is ImageNet-trained for real: through the worker's own
    preprocessing, a beach photo is a seashore and a church tower a bell cote, as
    torchvision's ImageNet class names read them; seeded random weights say neither."""
    from torchvision.models import ResNet50_Weights

    from changewatch.worker.embed import build_lite0

    categories = ResNet50_Weights.DEFAULT.meta["categories"]
    batch = _photo_batch("orientation/Landscape_0.jpg", "series/DSCN0027.jpg")
    tensor = (torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    for weights, expect in (("imagenet", True), ("random", False)):
        with torch.inference_mode():
            probs = build_lite0(weights, classifier=True)(tensor).softmax(-1)
        top = [categories[int(i)] for i in probs.argmax(-1)]
        assert (top == ["seashore", "bell cote"]) is expect, (weights, top)
        if expect:
            assert float(probs.max(-1).values.min()) > 0.3


def test_efficientnet_lite0_embedder_is_1280_d_and_named() -> None:
    """CHANGEWATCH_MODEL=efficientnet_lite0: pooled 1280-d features, a model id that
    names the architecture and the weights' digest, the same numbers on every worker."""
    embedder = Embedder("imagenet", model="efficientnet_lite0")
    embedder.setup("cpu")
    again = Embedder("imagenet", model="efficientnet_lite0")
    again.setup("cpu")
    batch = _photo_batch("series/DSCN0010.jpg", "series/DSCN0012.jpg")
    a, b = embedder.predict(batch), again.predict(batch)
    assert a.shape == (2, 1280) and a.dtype == np.float32
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert embedder.model_id.startswith("efficientnet_lite0/imagenet-")
    assert embedder.model_id.endswith("/prep1")
    # Two different scenes are far apart; a photo is at 0 from itself.
    assert cosine_distance(a[0], a[1]) > 0.1 and cosine_distance(a[0], b[0]) < 1e-4


def test_an_unknown_architecture_is_refused() -> None:
    with pytest.raises(ValueError, match="CHANGEWATCH_MODEL"):
        Embedder("random", model="vgg16")
