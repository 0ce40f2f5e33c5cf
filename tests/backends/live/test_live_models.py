"""The live backend's networks: structure against the catalog, shapes, determinism, INT8."""

from __future__ import annotations

import functools

import pytest

torch = pytest.importorskip("torch")

from autoscale_env.backends.live import models  # noqa: E402
from autoscale_env.world.config import load_workloads  # noqa: E402

from live_support import one_torch_thread  # noqa: E402,F401  (autouse fixture)

pytestmark = pytest.mark.live


CATALOG = load_workloads()
NAMES = models.model_names()

#: The catalog counts the translator's embedding table as one of its 2 FC layers ("embedding
#: and output projection as FC"), but counts only linear layers for MobileBERT (362 = 24 x 15 +
#: embedding transformation + head; its 3 embedding tables are not included). count_layers
#: follows whichever convention the catalog row uses, so every count is compared exactly.
EMBEDDINGS_AS_FC = models.EMBEDDINGS_AS_FC


@functools.cache
def built(name: str):
    """Each FP32 model is built once per test session (building calibrates batch norm)."""
    return models.build_model(name)


def test_every_catalog_network_has_a_model():
    assert sorted(NAMES) == sorted(CATALOG)


@pytest.mark.parametrize("name", NAMES)
def test_layer_counts_match_the_catalog_exactly(name):
    model = models.SPECS[name].builder()  # structure only: no init or calibration needed
    w = CATALOG[name]
    assert models.count_layers(model, embeddings_as_fc=name in EMBEDDINGS_AS_FC) == (
        w.conv, w.fc, w.rc)


@pytest.mark.parametrize("name", NAMES)
def test_output_shape_and_dtype(name):
    model = built(name)
    assert not model.training
    x = models.example_input(name, batch=2)
    with torch.no_grad():
        y = model(x)
    if name == "mbert":
        assert y.shape == (2, 2, 128) and y.dtype == torch.float32
    elif name == "lstm_nmt":
        assert y.shape == (2, 32) and y.dtype == torch.int64
        assert int(y.min()) >= 0 and int(y.max()) < models.SPECS[name].vocab_size
    else:
        assert y.shape == (2, models.NUM_CLASSES) and y.dtype == torch.float32
    assert torch.isfinite(y.float()).all()


def test_example_inputs_follow_the_spec():
    for name in NAMES:
        spec = models.SPECS[name]
        x = models.example_input(name, batch=3)
        assert x.shape == (3, *spec.input_shape) and x.dtype == spec.input_dtype
    assert models.example_input("mbert").shape == (1, 128)
    assert models.example_input("lstm_nmt").shape == (1, 32)
    assert models.example_input("incv3").shape == (1, 3, 299, 299)


def test_build_is_deterministic_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a, b = models.build_model("mnv3s", seed=3), models.build_model("mnv3s", seed=3)
    assert torch.equal(torch.get_rng_state(), before)
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    c = models.build_model("mnv3s", seed=4)
    assert not torch.equal(c.state_dict()["classifier.0.weight"], sa["classifier.0.weight"])
    x = models.example_input("mnv3s", seed=7)
    assert torch.equal(models.example_input("mnv3s", seed=7), x)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def test_image_outputs_depend_on_the_input():
    # Synthetic images must not all collapse to one prediction, or INT8 agreement is vacuous.
    with torch.no_grad():
        y = built("mnv3s")(models.synthetic_input("mnv3s", 16, seed=1))
    assert len(set(y.argmax(-1).tolist())) > 1
    translator = built("lstm_nmt")
    with torch.no_grad():
        tokens = translator(models.synthetic_input("lstm_nmt", 4, seed=1))
    assert len({tuple(t) for t in tokens.tolist()}) > 1


def test_unknown_name_lists_the_choices():
    with pytest.raises(KeyError, match="mnv1"):
        models.build_model("alexnet")


@pytest.mark.parametrize("name", ["mnv3s", "sqz", "mbert", "lstm_nmt"])
def test_int8_keeps_structure_and_output_contract(name):
    fp32 = built(name)
    int8 = models.quantize_int8(fp32, name)
    assert models.count_layers(int8) == models.count_layers(fp32)
    assert any("quantized" in type(m).__module__ for m in int8.modules())
    # The FP32 model is left untouched.
    assert not any("quantized" in type(m).__module__ for m in fp32.modules())
    x = models.example_input(name)
    with torch.no_grad():
        a, b = fp32(x), int8(x)
    assert a.shape == b.shape and a.dtype == b.dtype


@pytest.mark.parametrize("name, floor", [("sqz", 0.5), ("lstm_nmt", 0.2)])
def test_int8_path_computes_the_fp32_function(name, floor):
    # Chance agreement is 1/1000 classes (SqueezeNet) and about 1/vocabulary per token (the
    # translator); a faithful INT8 path of these random-weight models measured 0.94 and 0.46 on
    # 16 requests (seed 0). The floors sit far above chance and well below those, since random
    # weights leave near-tied logits that INT8 rounding may flip differently on other CPUs.
    agreement = models.int8_agreement(name, n_inputs=16)
    assert isinstance(agreement, float) and floor <= agreement <= 1.0


@pytest.mark.parametrize("name", sorted(models.TORCHVISION_BUILDERS))
def test_torchvision_owns_the_architectures_it_has(name):
    # FP32 from torchvision.models, INT8 from its quantizable twin where torchvision ships one.
    model = models.SPECS[name].builder()
    assert type(model).__module__.startswith("torchvision.models.")
    twin = models.TORCHVISION_BUILDERS[name][1]
    if twin is not None:
        assert type(twin()).__module__.startswith("torchvision.models.quantization.")


def test_only_what_torchvision_lacks_is_in_house():
    in_house = {n for n in models.SPECS if n not in models.TORCHVISION_BUILDERS}
    assert in_house == {"mnv1", "mbert", "lstm_nmt"}
