"""The in-process engine the live backend uses for local targets."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from autoscale_env.backends.live import models  # noqa: E402
from autoscale_env.backends.live.executor import (  # noqa: E402
    InferenceEngine,
    InputError,
    Placement,
    UnsupportedUnit,
)

from live_support import one_torch_thread  # noqa: E402,F401  (autouse fixture)

pytestmark = pytest.mark.live


@pytest.fixture(scope="module")
def engine():
    return InferenceEngine(max_batch=2)


def test_run_reports_output_time_busy_cpu_and_placement(engine):
    result = engine.run("sqz", "cpu/fp32", models.example_input("sqz"))
    assert result.output.shape == (1, 1000)
    assert result.placement == Placement("cpu", "fp32", False)
    assert result.compute_ms > 0 and result.cpu_ms > 0
    assert ("sqz", "cpu", "fp32") in engine.loaded()


def test_models_are_cached_per_device_and_precision(engine):
    a, _ = engine.load("sqz", "cpu/fp32")
    b, _ = engine.load("sqz", "cpu/fp16" if not torch.cuda.is_available() else "cpu/fp32")
    assert a is b  # cpu/fp16 falls back to the same CPU FP32 model
    c, placement = engine.load("sqz", "dsp/int8")
    assert c is not a and placement == Placement("cpu", "int8", True)


def test_inputs_are_checked_and_converted(engine):
    x = models.example_input("sqz")
    assert engine.run("sqz", "cpu/fp32", x.half().numpy()).output.shape == (1, 1000)
    with pytest.raises(InputError, match="shape"):
        engine.run("sqz", "cpu/fp32", x[:, :2])
    with pytest.raises(InputError, match="batch size"):
        engine.run("sqz", "cpu/fp32", x.repeat(3, 1, 1, 1))
    with pytest.raises(InputError, match="float32"):
        engine.run("sqz", "cpu/fp32", x.long())
    with pytest.raises(InputError, match="token ids"):
        engine.run("lstm_nmt", "cpu/fp32", np.full((1, 32), -1, np.int32))
    with pytest.raises(KeyError, match="valid choices"):
        engine.run("vgg16", "cpu/fp32", x)
    with pytest.raises(UnsupportedUnit):
        InferenceEngine(allow_fallback=False).run("sqz", "dsp/int8", x)


def test_int32_token_ids_are_accepted(engine):
    ids = models.example_input("lstm_nmt").int().numpy()
    result = engine.run("lstm_nmt", "cpu/int8", ids)
    assert result.output.shape == (1, 32) and result.output.dtype == torch.int64
