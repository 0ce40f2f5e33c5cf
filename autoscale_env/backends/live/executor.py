"""Run catalog networks on this host: model cache, unit placement, input checks, timing.

One :class:`InferenceEngine` serves both the local targets of the live backend (called in
process) and the edge/cloud servers (:mod:`.server`). It maps an AutoScale *unit*
(``processor/precision``, e.g. ``"gpu/fp16"``) to what this host can actually run
(:func:`resolve_unit`), builds each model once per ``(name, device, precision)``, checks inputs
against the model's contract, and measures the forward pass alone.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from autoscale_env.backends.live import models

__all__ = [
    "InferenceEngine",
    "InputError",
    "Placement",
    "RunResult",
    "UnsupportedUnit",
    "cuda_available",
    "resolve_unit",
]

log = logging.getLogger(__name__)

# Quantized Inception-style concats warn on every forward pass that their branches' scales
# differ (the INT8 rounding that models.int8_agreement measures); once per process is enough.
warnings.filterwarnings("once", message="All inputs of this cat operator must share")

_PROCESSORS = ("cpu", "gpu", "dsp")
_PRECISIONS = ("fp32", "fp16", "int8")


class InputError(ValueError):
    """An input does not fit the model (wrong dtype, shape, batch size or token range)."""


class UnsupportedUnit(ValueError):
    """A unit string is unknown, or it cannot run here and fallback is disabled."""


@dataclass(frozen=True)
class Placement:
    """Where a unit actually runs on this host."""

    device: str
    """``"cpu"`` or ``"cuda"``."""
    precision: str
    """``"fp32"``, ``"fp16"`` or ``"int8"``."""
    fallback: bool
    """True when this differs from what the unit asked for (e.g. ``gpu/fp16`` on a CPU host)."""


@dataclass(frozen=True)
class RunResult:
    """One inference's output and measurements."""

    output: torch.Tensor
    """The model output, on CPU."""
    compute_ms: float
    """Forward pass time, ms: from the host input to the host output (so host-device copies
    are included on CUDA), excluding model loading, input checks and queueing."""
    placement: Placement
    cpu_ms: float = float("nan")
    """CPU time this process used during the forward pass, ms, summed over its threads (up to
    ``threads x compute_ms``): the busy time a utilisation-based power model needs. It counts
    every thread of the process, so it is exact only when nothing else runs in it meanwhile."""


def cuda_available() -> bool:
    """True when torch sees a CUDA device."""
    return torch.cuda.is_available()


def resolve_unit(unit: str, has_cuda: bool | None = None, allow_fallback: bool = True) -> Placement:
    """Map ``processor/precision`` to what runs here.

    * ``*/int8`` runs the INT8 model on CPU (PyTorch's quantized kernels are CPU-only; a phone DSP
      is an INT8 accelerator, so ``dsp/int8`` is emulated this way and reported as a fallback).
    * ``gpu/fp32`` and ``gpu/fp16`` run on CUDA when present, else FP32 on CPU (fallback).
    * ``cpu/fp32`` runs FP32 on CPU; ``cpu/fp16`` runs FP32 on CPU (fallback: x86 CPUs without
      native FP16 arithmetic run FP16 through slow reference kernels).
    * ``dsp/fp32`` / ``dsp/fp16`` fall back like ``cpu/*``.

    Args:
        unit: e.g. ``"gpu/fp16"``.
        has_cuda: override CUDA detection (tests); None asks torch.
        allow_fallback: when False, any fallback raises :class:`UnsupportedUnit`.

    Returns:
        The :class:`Placement`.

    Raises:
        UnsupportedUnit: unknown processor/precision, or a needed fallback is not allowed.
    """
    parts = str(unit).split("/")
    if len(parts) != 2 or parts[0] not in _PROCESSORS or parts[1] not in _PRECISIONS:
        raise UnsupportedUnit(
            f"unit {unit!r} must be 'processor/precision' with processor in "
            f"{', '.join(_PROCESSORS)} and precision in {', '.join(_PRECISIONS)}"
        )
    processor, precision = parts
    cuda = cuda_available() if has_cuda is None else has_cuda
    if precision == "int8":
        placement = Placement("cpu", "int8", processor != "cpu")
    elif processor == "gpu" and cuda:
        placement = Placement("cuda", precision, False)
    else:
        placement = Placement("cpu", "fp32", processor != "cpu" or precision != "fp32")
    if placement.fallback and not allow_fallback:
        raise UnsupportedUnit(
            f"unit {unit} cannot run on this host (it would run as {placement.device}/"
            f"{placement.precision}) and fallback is disabled"
        )
    return placement


class InferenceEngine:
    """A thread-safe cache of built models that runs and times inferences.

    Models are built lazily on first use (and warmed up with one inference, so one-time costs such
    as weight pre-packing or cuDNN autotuning never land in a measured request). Inferences are
    serialised by a lock: concurrent requests queue rather than share cores, so each measured
    ``compute_ms`` is one model's forward pass alone.

    Args:
        seed: weight seed passed to :func:`models.build_model`.
        allow_fallback: see :func:`resolve_unit`.
        max_batch: the largest batch accepted in one request.
        warmup: run one inference when a model is loaded.
    """

    def __init__(self, seed: int = 0, allow_fallback: bool = True, max_batch: int = 8,
                 warmup: bool = True):
        self.seed = seed
        self.allow_fallback = allow_fallback
        self.max_batch = max_batch
        self.warmup = warmup
        self._models: dict[tuple[str, str, str], torch.nn.Module] = {}
        self._fp32: dict[str, torch.nn.Module] = {}
        self._load_lock = threading.Lock()  # guards the dicts, never held while building
        self._building: dict[str, threading.Lock] = {}
        self._run_lock = threading.Lock()

    def placement(self, unit: str) -> Placement:
        """Where ``unit`` runs under this engine's fallback policy."""
        return resolve_unit(unit, allow_fallback=self.allow_fallback)

    def loaded(self) -> list[tuple[str, str, str]]:
        """Keys ``(name, device, precision)`` of the models built so far."""
        with self._load_lock:
            return sorted(self._models)

    def load(self, name: str, unit: str) -> tuple[torch.nn.Module, Placement]:
        """The model for ``name`` on ``unit`` (built and warmed up on first use).

        Raises:
            KeyError: unknown network name.
            UnsupportedUnit: see :func:`resolve_unit`.
        """
        placement = self.placement(unit)
        key = (name, placement.device, placement.precision)
        model = self._models.get(key)
        if model is not None:  # the common case takes no lock at all
            return model, placement
        # Build under a per-network lock, not a global one: a request for a model that is
        # still loading waits, requests for loaded models run meanwhile.
        with self._load_lock:
            building = self._building.setdefault(name, threading.Lock())
        with building:
            model = self._models.get(key)
            if model is None:
                model = self._build(name, placement)
                if self.warmup:
                    with self._run_lock:
                        self._forward(model, models.example_input(name), name, placement)
                with self._load_lock:
                    self._models[key] = model
        return model, placement

    def _build(self, name: str, placement: Placement) -> torch.nn.Module:
        t0 = time.perf_counter()
        if name not in self._fp32:
            self._fp32[name] = models.build_model(name, self.seed)
        fp32 = self._fp32[name]
        if placement.precision == "int8":
            model = models.quantize_int8(fp32, name)
        elif placement.device == "cuda":
            model = copy.deepcopy(fp32).to("cuda")
            if placement.precision == "fp16":
                model = model.half()
        else:
            model = fp32
        log.info("loaded %s on %s/%s in %.0f ms", name, placement.device, placement.precision,
                 (time.perf_counter() - t0) * 1e3)
        return model.eval()

    def check_input(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """Validate ``x`` for ``name`` and return it in the model's input dtype.

        Images accept uint8 pixels (:func:`models.from_pixels`), float32 or float16
        ``(batch, 3, H, W)`` of the model's resolution; token
        models accept int64 or int32 ``(batch, length)`` ids inside the vocabulary.

        Raises:
            KeyError: unknown network name.
            InputError: anything else.
        """
        spec = models.SPECS.get(name)
        if spec is None:
            raise KeyError(f"unknown network {name!r}; valid choices: {', '.join(models.SPECS)}")
        expected = ("batch", *spec.input_shape)
        if x.dim() != len(expected) or tuple(x.shape[1:]) != spec.input_shape:
            raise InputError(f"{name} expects input of shape {expected}, got {tuple(x.shape)}")
        if not 1 <= x.shape[0] <= self.max_batch:
            raise InputError(f"batch size {x.shape[0]} is outside [1, {self.max_batch}]")
        if spec.is_image:
            if x.dtype == torch.uint8:  # camera pixels (models.to_pixels)
                return models.from_pixels(x)
            if x.dtype not in (torch.float32, torch.float16):
                raise InputError(f"{name} expects uint8, float32 or float16 pixels, got {x.dtype}")
            if not bool(torch.isfinite(x).all()):
                raise InputError(f"{name} input contains NaN or infinity")
            return x.float()
        if x.dtype not in (torch.int64, torch.int32):
            raise InputError(f"{name} expects int64 or int32 token ids, got {x.dtype}")
        if x.numel() and (int(x.min()) < 0 or int(x.max()) >= spec.vocab_size):
            raise InputError(f"{name} token ids must lie in [0, {spec.vocab_size})")
        return x.long()

    def run(self, name: str, unit: str, x: torch.Tensor | np.ndarray) -> RunResult:
        """Check ``x``, then run ``name`` on ``unit`` and time it.

        Args:
            name: catalog network name.
            unit: ``processor/precision``.
            x: the input batch (tensor or numpy array).

        Returns:
            The :class:`RunResult`.

        Raises:
            KeyError: unknown network name.
            UnsupportedUnit: the unit cannot run here.
            InputError: the input does not fit the model.
            RuntimeError: inference itself failed (e.g. CUDA out of memory).
        """
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(np.ascontiguousarray(x))
        x = self.check_input(name, x)
        model, placement = self.load(name, unit)
        with self._run_lock:
            c0, t0 = time.process_time(), time.perf_counter()
            out = self._forward(model, x, name, placement)
            compute_ms = (time.perf_counter() - t0) * 1e3
            cpu_ms = (time.process_time() - c0) * 1e3
        return RunResult(out, compute_ms, placement, cpu_ms)

    @staticmethod
    @torch.inference_mode()
    def _forward(model: torch.nn.Module, x: torch.Tensor, name: str,
                 placement: Placement) -> torch.Tensor:
        if placement.device == "cpu":
            # Seeded random weights make denormal activations common, and x86 computes on them
            # up to 10x slower (measured: a BERT-style encoder 4.4 s -> 0.3 s per request).
            # Phone runtimes flush denormals to zero (ARM NEON does), so do the same, only for
            # the forward pass: the flag is the thread's FPU state and would change numpy too.
            torch.set_flush_denormal(True)
            try:
                return model(x)
            finally:
                torch.set_flush_denormal(False)
        if placement.device == "cuda":
            x = x.to("cuda", non_blocking=True)
            if placement.precision == "fp16" and x.is_floating_point():
                x = x.half()
            out = model(x).cpu()  # .cpu() synchronises the stream
            return out
        return model(x)
