"""The INT8 model step for CPU workers: quantized once, compiled once, kept on disk.

Why each step:

- PT2E static quantization (torchao's ``prepare_pt2e``/``convert_pt2e`` with the x86
  Inductor quantizer's default config: uint8 activations per tensor, int8 weights per
  channel) only inserts quantize/dequantize ops; AOTInductor with freezing lowers them
  into oneDNN ``qconv`` kernels with prepacked weights (without freezing the graph would
  run dequantize -> fp32 conv, slower than bf16).
- Calibration and compilation take tens of seconds; autoscaling needs a worker that takes
  its first job within seconds. So the compiled program is an AOTInductor package on
  disk, keyed by what makes it valid (torch version, model id, CPU ISA, layout), and a worker
  start only loads it. ``python -m changewatch.worker prepare-model`` builds it ahead
  of time; a worker that finds none builds it once and saves it.
- The program is compiled for one batch size, ``BATCH`` (a session's six photos), and a
  call of any other size is split into batches of ``BATCH``, the last padded. With a
  dynamic batch dimension the weight prepack cannot see the input's shape, so it packs
  for a guess. On an AMD EPYC (AVX512-VNNI, no AMX), oneDNN then picked kernels that
  wanted another layout and reordered the weights on every call, partly with its slow
  reference reorder: 52% of the INT8 time at batch 6. The static program ran 2.1x the
  dynamic one there (87 against 42 images/s at batch 6, docs/benchmarks.md).
- Anything missing (torchao, a compiler, a refused model) is an error at start: a worker
  never silently falls back to fp32 under an INT8 model id, or the reverse.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .calibration import CALIBRATION

log = logging.getLogger(__name__)

PRECISION_TAG = f"int8-{CALIBRATION}"
# The batch size the program is compiled for (a session); calls are split and padded to it.
BATCH = 6
# Calibration exports with a dynamic batch (its batches are 8 photos), up to this size.
_CALIBRATION_MAX_BATCH = 256
# What the compiled program's layout is, in its cache key: a program of another layout
# (the dynamic-batch ones of before) is never loaded as this one.
_LAYOUT = f"static-batch-{BATCH}"
# Models whose INT8 scores do not agree with their fp32/bf16 scores on the validity set
# (bench/validity/precision.py, docs/benchmarks.md "Issue 24"): INT8 is refused for them.
REFUSED: dict[str, str] = {
    "efficientnet_lite0": (
        "on the validity set (python -m bench.validity.precision, 3 seeds, 162 angle scores, "
        "2026-12-07) INT8 moved angle scores by up to 0.021 against fp32 and 0.032 against "
        "bf16 (median 0.004); the limit is 0.01"
    ),
}


@contextlib.contextmanager
def refusal_lifted(model: str) -> Iterator[None]:
    """For the benches that measure a refused model (how it fails, how fast it would be)."""
    reason = REFUSED.pop(model, None)
    try:
        yield
    finally:
        if reason is not None:
            REFUSED[model] = reason


class Int8Unavailable(RuntimeError):
    """INT8 cannot run here as configured; the worker must not start."""


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "changewatch"


def cache_dir(setting: str = "") -> Path:
    """CHANGEWATCH_MODEL_CACHE, else $XDG_CACHE_HOME/changewatch (~/.cache/changewatch)."""
    return Path(setting).expanduser() if setting else default_cache_dir()


def cpu_isa() -> str:
    """What the compiled kernels assume of the CPU: its vector ISA and AMX tiles."""
    capability = torch.backends.cpu.get_cpu_capability()
    amx = bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())
    return f"{platform.machine()}-{capability}{'-amx' if amx else ''}".lower()


def check_allowed(model: str) -> None:
    if model in REFUSED:
        raise Int8Unavailable(
            f"CHANGEWATCH_PRECISION=int8 is refused for {model}: {REFUSED[model]}. "
            "Use CHANGEWATCH_PRECISION=auto (bf16 or fp32)."
        )


def _torchao() -> Any:
    try:
        from torchao.quantization.pt2e import quantize_pt2e
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer
    except ImportError as exc:
        raise Int8Unavailable(
            "CHANGEWATCH_PRECISION=int8 needs torchao>=0.17 (pip install 'changewatch[worker]')"
        ) from exc
    return quantize_pt2e, x86_inductor_quantizer


def artifact_path(model_id: str, cache: Path) -> Path:
    """Where the compiled program of ``model_id`` lives for this torch and this CPU."""
    key = json.dumps([model_id, torch.__version__, cpu_isa(), _LAYOUT])
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    readable = model_id.split("/")[0]
    return cache / "models" / f"{readable}-{digest}.pt2"


def use_persistent_inductor_cache(cache: Path) -> None:
    """Inductor's own cache (the ISA probes a package load compiles with g++, 3-10 s in a
    fresh process otherwise: pytorch #191715) next to the artifacts, not in /tmp."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir as inductor_default

    # torch writes its /tmp default into the environment on first use: only an
    # operator's own choice is kept.
    current = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if current is None or os.path.abspath(current) == os.path.abspath(inductor_default()):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache / "inductor")


def unshare_modules(model: torch.nn.Module) -> torch.fx.GraphModule:
    """The model with one module per call: torchvision's Bottleneck calls one ReLU three
    times, and the quantizer's patterns (conv + add + relu) need each call on its own."""
    graph = torch.fx.symbolic_trace(model)
    seen: set[str] = set()
    for node in graph.graph.nodes:
        if node.op == "call_module":
            if node.target in seen:
                copy = f"{node.target}_call{len(seen)}".replace(".", "_")
                graph.add_submodule(copy, type(graph.get_submodule(node.target))())
                node.target = copy
            seen.add(node.target)
        node.meta = {}  # stale module stacks would regroup the calls at export
    graph.recompile()
    return graph


def _dynamic_batch() -> dict[str, dict[int, Any]]:
    return {"x": {0: torch.export.Dim("batch", min=1, max=_CALIBRATION_MAX_BATCH)}}


def quantize(
    model: torch.nn.Module, calibration: list[torch.Tensor]
) -> tuple[torch.nn.Module, torch.Tensor]:
    """Static INT8 (x86 Inductor default config), calibrated on normalized batches."""
    quantize_pt2e, x86 = _torchao()
    example = calibration[0][:BATCH]
    with torch.no_grad():
        exported = torch.export.export(
            unshare_modules(model), (example,), dynamic_shapes=_dynamic_batch()
        )
        quantizer = x86.X86InductorQuantizer()
        quantizer.set_global(x86.get_default_x86_inductor_quantization_config())
        prepared = quantize_pt2e.prepare_pt2e(exported.module(), quantizer)
        for batch in calibration:
            prepared(batch)
        return quantize_pt2e.convert_pt2e(prepared), example


def compile_package(model: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    """AOTInductor with freezing (qconv with weights prepacked for ``example``'s shape,
    a batch of ``BATCH``); written to a temporary file and renamed, so workers starting
    together never read half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        exported = torch.export.export(model, (example,))
        handle, scratch = tempfile.mkstemp(suffix=".pt2", dir=path.parent)
        os.close(handle)
        try:
            torch._inductor.aoti_compile_and_package(
                exported, package_path=scratch, inductor_configs={"freezing": True}
            )
            os.replace(scratch, path)
        finally:
            Path(scratch).unlink(missing_ok=True)


def build(
    make_model: Callable[[], torch.nn.Module],
    calibration: Callable[[], list[torch.Tensor]],
    path: Path,
) -> None:
    """Quantize and compile once; any failure is an ``Int8Unavailable`` naming the cause."""
    started = time.perf_counter()
    _torchao()  # before minutes of work, and never silently skipped
    try:
        converted, example = quantize(make_model(), calibration())
        compile_package(converted, example, path)
    except Int8Unavailable:
        raise
    except Exception as exc:
        raise Int8Unavailable(f"INT8 quantization or compilation failed: {exc}") from exc
    log.info("INT8 model compiled in %.0f s: %s", time.perf_counter() - started, path)


def load(path: Path) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """The compiled program; called like the trunk: x -> (middle map, last map).

    AOTInductor's runner holds the GIL for the whole call (torch 2.14: a Python thread
    stalled for all of each ~100 ms forward pass), so a worker's decode threads wait on it;
    on a CPU host run one worker process per core (``launch --cpu N``, docs/benchmarks.md).
    """
    try:
        compiled = torch._inductor.aoti_load_package(str(path))
    except Exception as exc:
        raise Int8Unavailable(
            f"cannot load the INT8 model {path} ({exc}); delete it and run "
            "`python -m changewatch.worker prepare-model`"
        ) from exc

    def forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = x.shape[0]
        if rows % BATCH:  # the last batch padded with zeros, cut off again below
            x = torch.cat([x, x.new_zeros((BATCH - rows % BATCH, *x.shape[1:]))])
        outputs = [
            compiled(part.contiguous(memory_format=torch.channels_last)) for part in x.split(BATCH)
        ]
        middle = torch.cat([m for m, _ in outputs])[:rows]
        last = torch.cat([t for _, t in outputs])[:rows]
        return middle, last

    return forward


def uses_quantized_kernels(path: Path) -> bool:
    """Whether the package's generated code calls oneDNN's quantized convolution (INT8 can
    silently run as dequantize + fp32 conv: pytorch #108638)."""
    import zipfile

    with zipfile.ZipFile(path) as package:
        for name in package.namelist():
            if name.endswith((".cpp", ".h", ".py", ".json")):
                text = package.read(name).decode(errors="ignore")
                if "qconv" in text:
                    return True
    return False


def calibration_batches(normalize: Callable[[np.ndarray], torch.Tensor]) -> list[torch.Tensor]:
    from .calibration import calibration_images

    images = calibration_images()
    return [normalize(images[i : i + 8]) for i in range(0, len(images), 8)]
