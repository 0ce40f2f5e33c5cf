"""The catalog's networks as PyTorch modules, plus INT8 quantization and layer counting.

**Architectures come from the library that owns them.** Every network torchvision has is built by
``torchvision.models.<name>(weights=None)`` (``mnv2``, ``mnv3l``, ``mnv3s``, ``mnasnet``
(``mnasnet1_0``, the B1 variant without squeeze-excite whose 52 conv layers the catalog counts),
``incv1`` (``googlenet``), ``incv3``, ``rn50``, ``sqz`` (``squeezenet1_0``)), and its INT8
variant from ``torchvision.models.quantization`` where torchvision provides one (see
:func:`quantize_int8`). Only the three torchvision lacks are written here: MobileNet v1,
MobileBERT and the LSTM translator. Weights are a fixed random initialisation
(``torch.manual_seed(seed)``); nothing is downloaded. The models therefore compute the right
*amount and shape* of work but are not trained: their outputs are meaningful only relative to each
other (FP32 versus INT8 agreement), never as ImageNet predictions.

Layer counts (:func:`count_layers`) match the catalog exactly. The catalog counts the
translator's embedding table as an FC layer but not MobileBERT's three embedding tables, so
``count_layers(..., embeddings_as_fc=True)`` reproduces the ``lstm_nmt`` row and the default the
others.

**Input resolution is the published one** (224x224, ``incv3`` 299x299).

Deviations from the published models, each to keep the code honest about what it is or the
latency fixed per request:

* **Untrained, randomly initialised weights** (see above). Random networks with batch norm are
  chaotic: 1 % input noise (an SNR of 40 dB) leaves an output SNR of only 12-22 dB in
  MobileNet v1/v2, ResNet-50 and Inception v1, so INT8 agreement measured on them understates
  what trained networks achieve (see :func:`int8_agreement`).
* **1000 classes**, not TensorFlow's 1001 (no background class): the class count changes the
  last layer's width by 0.1 %.
* **Inception v1** is torchvision's GoogLeNet: batch norm after every convolution (as TF-slim's
  ``inception_v1``, whose accuracy the catalog quotes) and, as torchvision has it, 3x3 (not
  5x5) convolutions in the third branch. Inception v1 and v3 are built without their auxiliary
  classifiers (not run at inference) and without ``transform_input``.
* **MobileBERT** keeps the full published shape (24 layers, hidden 512, bottleneck 128, 4 heads,
  4 feed-forward stacks, NoNorm, trigram input embedding, sequence 128) because it fits the budget;
  it ends in a SQuAD span head (start/end logits, output ``(batch, 2, 128)``). Token-type ids are
  all 0 and there is no padding mask (every position is a real token).
* **LSTM translator**: source and target share one 16,000-token embedding (a joint BPE vocabulary,
  as in WMT en-de systems), 2 encoder + 2 decoder LSTM layers of 512 units, no attention, greedy
  decoding of exactly 32 tokens (no early stop at end-of-sentence, so the work per request is
  fixed). Output: ``(batch, 32)`` int64 token ids.

The in-house and the torchvision networks get the same seeded torchvision-style initialisation
(:func:`_init_weights`), not torchvision's own per-architecture one.
Randomly initialised batch-norm statistics would leave activations badly scaled, so after the
seeded initialisation every network with batch norm has its running statistics re-estimated on a
fixed, seeded batch of synthetic images (:func:`synthetic_input`) and is then put in eval mode.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "SPECS",
    "ModelSpec",
    "build_model",
    "count_layers",
    "example_input",
    "int8_agreement",
    "model_names",
    "quantize_int8",
    "synthetic_input",
    "top1",
]

NUM_CLASSES = 1000

# --------------------------------------------------------------------------------------------
# Shared building blocks
# --------------------------------------------------------------------------------------------


class ConvBNAct(nn.Sequential):
    """Convolution, batch norm (or a conv bias when ``bn=False``) and an optional activation."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int | tuple[int, int] = 3,
        stride: int = 1,
        padding: int | tuple[int, int] | None = None,
        groups: int = 1,
        act: Callable[..., nn.Module] | None = nn.ReLU,
        bn: bool = True,
    ):
        if padding is None:  # "same" padding for odd kernels
            k = (kernel, kernel) if isinstance(kernel, int) else kernel
            padding = ((k[0] - 1) // 2, (k[1] - 1) // 2)
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=not bn)
        ]
        if bn:
            layers.append(nn.BatchNorm2d(cout))
        if act is not None:
            layers.append(act(inplace=True))
        super().__init__(*layers)


class ConvNet(nn.Module):
    """An image classifier: ``features`` -> global average pool -> flatten -> ``head``."""

    def __init__(self, features: nn.Module, head: nn.Module):
        super().__init__()
        self.features = features
        self.head = head
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.features(x)), 1))


# --------------------------------------------------------------------------------------------
# Convolutional networks
# --------------------------------------------------------------------------------------------


def _mobilenet_v1() -> nn.Module:
    """MobileNet v1 1.0: a 3x3 stem and 13 depthwise-separable pairs (27 conv) + 1 FC."""
    layers: list[nn.Module] = [ConvBNAct(3, 32, 3, 2)]
    cin = 32
    for cout, stride in [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [
        (512, 1)
    ] * 5 + [(1024, 2), (1024, 1)]:
        layers += [ConvBNAct(cin, cin, 3, stride, groups=cin), ConvBNAct(cin, cout, 1)]
        cin = cout
    return ConvNet(nn.Sequential(*layers), nn.Linear(1024, NUM_CLASSES))


# torchvision: every architecture it owns is built by torchvision itself (``weights=None``: the
# same seeded initialisation as the in-house networks, nothing downloaded), so the live backend
# runs the reference implementation rather than a copy. The quantizable twins (INT8) come from
# ``torchvision.models.quantization`` where torchvision provides them (see :func:`quantize_int8`).

_tv_library = None  # keeps the op schemas of :func:`_torchvision` registered


def _torchvision():
    """Import torchvision, tolerating a build whose compiled ops do not load against this torch.

    The torchvision wheel on PyPI is the CUDA build, linked against ``libtorch_cuda``; with the
    pinned CPU torch its ``_C`` extension (detection ops, image decoding) cannot load, and
    torchvision 0.28's unconditional ``register_fake("torchvision::nms")`` then aborts the
    import. The classification architectures are pure Python and use none of those ops, so in
    that case the two op *schemas* are declared (no kernel: calling ``torchvision.ops.nms``
    still fails loudly) and the import is retried. With the ``+cpu`` wheel nothing is patched.
    """
    global _tv_library
    import sys

    try:
        import torchvision
    except RuntimeError as e:
        if "torchvision::" not in str(e):
            raise
        for mod in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[mod]
        _tv_library = torch.library.Library("torchvision", "DEF")  # noqa: PLW0603
        for op in ("nms", "qnms"):
            _tv_library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import torchvision
    import torchvision.models
    import torchvision.models.quantization

    return torchvision


def _tv(builder: str, quantizable: bool = False, **kwargs) -> Callable[[], nn.Module]:
    """A builder calling ``torchvision.models[.quantization].<builder>(weights=None, ...)``."""

    def build() -> nn.Module:
        tv = _torchvision()
        if quantizable:
            return getattr(tv.models.quantization, builder)(weights=None, quantize=False,
                                                            **kwargs)
        return getattr(tv.models, builder)(weights=None, **kwargs)

    build.__name__ = f"torchvision.models.{'quantization.' if quantizable else ''}{builder}"
    return build


def _mobilenet_v3_small_quantizable() -> nn.Module:
    """torchvision's quantizable MobileNet v3 class with the small configuration.

    torchvision ships quantized weights (hence a builder) only for the large variant, but its
    ``QuantizableMobileNetV3`` takes either configuration.
    """
    _torchvision()
    from torchvision.models.mobilenetv3 import _mobilenet_v3_conf  # noqa: PLC2701 (torchvision builds its MobileNetV3 configs only here)
    from torchvision.models.quantization.mobilenetv3 import (
        QuantizableInvertedResidual,
        QuantizableMobileNetV3,
    )

    setting, last_channel = _mobilenet_v3_conf("mobilenet_v3_small")
    # as torchvision's own quantizable builder does for the large variant
    return QuantizableMobileNetV3(setting, last_channel, block=QuantizableInvertedResidual)


#: torchvision builders per catalog network: (FP32 model, quantizable twin or None).
#: Inception v1 and v3 are built without auxiliary classifiers (not run at inference) and without
#: ``transform_input`` (inputs are already normalised).
_GOOGLENET = {"aux_logits": False, "transform_input": False, "init_weights": False}
TORCHVISION_BUILDERS: dict[str, tuple[Callable[[], nn.Module], Callable[[], nn.Module] | None]] = {
    "mnv2": (_tv("mobilenet_v2"), _tv("mobilenet_v2", True)),
    "mnv3l": (_tv("mobilenet_v3_large"), _tv("mobilenet_v3_large", True)),
    "mnv3s": (_tv("mobilenet_v3_small"), _mobilenet_v3_small_quantizable),
    "mnasnet": (_tv("mnasnet1_0"), None),
    "incv1": (_tv("googlenet", **_GOOGLENET), _tv("googlenet", True, **_GOOGLENET)),
    "incv3": (_tv("inception_v3", **_GOOGLENET), _tv("inception_v3", True, **_GOOGLENET)),
    "rn50": (_tv("resnet50"), _tv("resnet50", True)),
    "sqz": (_tv("squeezenet1_0"), None),
}


# --------------------------------------------------------------------------------------------
# MobileBERT
# --------------------------------------------------------------------------------------------


class NoNorm(nn.Module):
    """MobileBERT's replacement for LayerNorm: an element-wise affine map (no statistics)."""

    def __init__(self, size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.bias = nn.Parameter(torch.zeros(size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight + self.bias


class _FeedForward(nn.Module):
    """One of MobileBERT's stacked FFNs: 128 -> 512 -> 128 with a NoNorm residual (2 FC)."""

    def __init__(self, size: int, inner: int):
        super().__init__()
        self.inner = nn.Linear(size, inner)
        self.outer = nn.Linear(inner, size)
        self.norm = NoNorm(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.outer(F.relu(self.inner(x))) + x)


class MobileBertLayer(nn.Module):
    """A MobileBERT block (15 FC layers).

    Input and attention bottlenecks, 4-head attention on the 128-wide bottleneck (query and key
    share the attention bottleneck, value reads the 512-wide input), three extra FFNs, the
    intermediate/output pair and the output bottleneck back to 512.
    """

    def __init__(self, hidden: int = 512, size: int = 128, inner: int = 512, heads: int = 4,
                 n_ffn: int = 4):
        super().__init__()
        self.heads = heads
        self.bneck_input, self.bneck_input_norm = nn.Linear(hidden, size), NoNorm(size)
        self.bneck_attn, self.bneck_attn_norm = nn.Linear(hidden, size), NoNorm(size)
        self.query, self.key, self.value = (nn.Linear(size, size), nn.Linear(size, size),
                                            nn.Linear(hidden, size))
        self.attn_out, self.attn_norm = nn.Linear(size, size), NoNorm(size)
        self.ffn = nn.Sequential(*[_FeedForward(size, inner) for _ in range(n_ffn - 1)])
        self.intermediate, self.output = nn.Linear(size, inner), nn.Linear(inner, size)
        self.output_norm = NoNorm(size)
        self.bneck_out, self.bneck_out_norm = nn.Linear(size, hidden), NoNorm(hidden)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layer_input = self.bneck_input_norm(self.bneck_input(x))
        shared = self.bneck_attn_norm(self.bneck_attn(x))
        q, k, v = self._split(self.query(shared)), self._split(self.key(shared)), self._split(
            self.value(x))
        ctx = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)
        h = self.attn_norm(self.attn_out(ctx) + layer_input)
        h = self.ffn(h)
        h = self.output_norm(self.output(F.relu(self.intermediate(h))) + h)
        return self.bneck_out_norm(self.bneck_out(h) + x)


class MobileBert(nn.Module):
    """MobileBERT (24 layers) with a SQuAD span head.

    ``(batch, seq)`` int64 ids -> ``(batch, 2, seq)`` start/end logits. FC layers: 24 x 15, the
    embedding transformation and the head, 362 in all.
    """

    def __init__(self, vocab: int = 30522, embed: int = 128, hidden: int = 512, layers: int = 24,
                 max_positions: int = 512):
        super().__init__()
        self.word = nn.Embedding(vocab, embed)
        self.position = nn.Embedding(max_positions, hidden)
        self.token_type = nn.Embedding(2, hidden)
        self.embed_transform = nn.Linear(3 * embed, hidden)  # trigram input embedding
        self.embed_norm = NoNorm(hidden)
        self.layers = nn.Sequential(*[MobileBertLayer(hidden) for _ in range(layers)])
        self.qa = nn.Linear(hidden, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        e = self.word(ids)
        # Each position sees its right neighbour, itself and its left neighbour (zero-padded).
        e = torch.cat([F.pad(e[:, 1:], (0, 0, 0, 1)), e, F.pad(e[:, :-1], (0, 0, 1, 0))], dim=2)
        positions = torch.arange(ids.shape[1], device=ids.device)
        h = self.embed_transform(e) + self.position(positions) + self.token_type.weight[0]
        h = self.layers(self.embed_norm(h))
        return self.qa(h).transpose(1, 2)


# --------------------------------------------------------------------------------------------
# LSTM translator
# --------------------------------------------------------------------------------------------


class LstmTranslator(nn.Module):
    """Encoder-decoder translator: shared embedding, 2+2 LSTM layers of 512, greedy decoding.

    ``(batch, src_len)`` int64 source ids -> ``(batch, steps)`` int64 target ids. The decoder
    starts from the encoder's final state and the begin-of-sentence token (id 1). The encoder is
    a fused 2-layer ``nn.LSTM`` over the whole source; the decoder is two stacked ``nn.LSTMCell``
    because it runs one token at a time, and the fused CPU LSTM re-packs its weights on every
    call (about 5 ms per single-token step here, 10x the cell's cost).
    """

    BOS = 1

    def __init__(self, vocab: int = 16000, hidden: int = 512, layers: int = 2, steps: int = 32):
        super().__init__()
        self.steps = steps
        self.embedding = nn.Embedding(vocab, hidden)
        self.encoder = nn.LSTM(hidden, hidden, layers, batch_first=True)
        self.decoder = nn.ModuleList([nn.LSTMCell(hidden, hidden) for _ in range(layers)])
        self.project = nn.Linear(hidden, vocab)

    def forward(self, src: torch.Tensor) -> torch.Tensor:
        _, (h, c) = self.encoder(self.embedding(src))
        state = [(h[i], c[i]) for i in range(len(self.decoder))]
        token = torch.full((src.shape[0],), self.BOS, dtype=torch.long, device=src.device)
        out = []
        for _ in range(self.steps):
            x = self.embedding(token)
            for i, cell in enumerate(self.decoder):
                state[i] = cell(x, state[i])
                x = state[i][0]
            token = self.project(x).argmax(-1)
            out.append(token)
        return torch.stack(out, 1)


# --------------------------------------------------------------------------------------------
# Catalog
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """How to build and feed one catalog network."""

    name: str
    builder: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    """Shape of one request without the batch axis, e.g. ``(3, 224, 224)`` or ``(128,)``."""
    input_dtype: torch.dtype
    vocab_size: int = 0
    """For token inputs: ids are drawn from ``[2, vocab_size)`` (0 = padding, 1 = BOS)."""
    note: str = ""

    @property
    def is_image(self) -> bool:
        """True for image classifiers (float32 NCHW input)."""
        return self.input_dtype == torch.float32

    @property
    def output_is_tokens(self) -> bool:
        """True when the model returns token ids instead of logits (the translator)."""
        return self.name == "lstm_nmt"


def _image(name: str, builder: Callable[[], nn.Module], res: int = 224, note: str = ""):
    return ModelSpec(name, builder, (3, res, res), torch.float32, note=note)


#: Every catalog network, by catalog name.
SPECS: dict[str, ModelSpec] = {
    s.name: s
    for s in (
        _image("mnv1", _mobilenet_v1),
        _image("mnv2", TORCHVISION_BUILDERS["mnv2"][0]),
        _image("mnv3l", TORCHVISION_BUILDERS["mnv3l"][0]),
        _image("mnv3s", TORCHVISION_BUILDERS["mnv3s"][0]),
        _image("mnasnet", TORCHVISION_BUILDERS["mnasnet"][0]),
        _image("incv1", TORCHVISION_BUILDERS["incv1"][0]),
        _image("incv3", TORCHVISION_BUILDERS["incv3"][0], 299),
        _image("rn50", TORCHVISION_BUILDERS["rn50"][0]),
        _image("sqz", TORCHVISION_BUILDERS["sqz"][0]),
        ModelSpec("mbert", MobileBert, (128,), torch.int64, vocab_size=30522,
                  note="full MobileBERT shape, SQuAD span head"),
        ModelSpec("lstm_nmt", LstmTranslator, (32,), torch.int64, vocab_size=16000,
                  note="greedy decode of 32 tokens"),
    )
}


def model_names() -> list[str]:
    """The catalog names this module can build, in catalog order."""
    return list(SPECS)


def _spec(name: str) -> ModelSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise KeyError(
            f"unknown network {name!r}; valid choices: {', '.join(SPECS)}"
        ) from None


def synthetic_input(name: str, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """A deterministic batch of synthetic requests for ``name``.

    Images are smooth random fields (8x8 noise upsampled, per-image brightness and contrast, a
    little pixel noise), roughly ImageNet-normalised: unlike white noise, their pooled features
    differ between images, so classifier outputs vary from input to input. Token inputs are
    uniform random ids.

    Args:
        name: a catalog network name.
        batch: number of requests in the batch.
        seed: seed of the private generator (the global torch RNG is not touched).

    Returns:
        ``(batch, *spec.input_shape)`` tensor of ``spec.input_dtype``.
    """
    spec = _spec(name)
    g = torch.Generator().manual_seed(seed)
    if not spec.is_image:
        return torch.randint(2, spec.vocab_size, (batch, *spec.input_shape), generator=g)
    c, h, w = spec.input_shape
    coarse = torch.randn(batch, c, 8, 8, generator=g)
    x = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    contrast = 0.5 + torch.rand(batch, 1, 1, 1, generator=g)
    shift = 0.5 * torch.randn(batch, c, 1, 1, generator=g)
    return x * contrast + shift + 0.1 * torch.randn(batch, c, h, w, generator=g)


#: uint8 pixel ``p`` stands for ``(p - 127.5) / PIXEL_SCALE``: [-3, 3], the span of
#: ImageNet-normalised inputs. A phone sends the camera's 8-bit image, as the catalog's
#: ``input_bytes`` (1 x 224 x 224 x 3 bytes) assume, and normalises it next to the model.
PIXEL_SCALE = 42.5


def to_pixels(x: torch.Tensor) -> torch.Tensor:
    """A normalised float image batch as the uint8 pixels a camera would deliver."""
    return (x * PIXEL_SCALE + 127.5).round().clamp(0, 255).to(torch.uint8)


def from_pixels(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels back to the normalised float32 input of the image models."""
    return (x.float() - 127.5) / PIXEL_SCALE


def request_input(name: str, seed: int = 0) -> torch.Tensor:
    """What one request carries over the wire: uint8 pixels or int32 token ids (batch 1)."""
    x = synthetic_input(name, 1, seed)
    return to_pixels(x) if _spec(name).is_image else x.to(torch.int32)


def example_input(name: str, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """A valid input batch for ``name`` (image ``(batch, 3, H, W)`` float32 or ids int64).

    Args:
        name: a catalog network name.
        batch: batch size.
        seed: seed of the synthetic content.

    Returns:
        The tensor a request for ``name`` carries.
    """
    return synthetic_input(name, batch, seed)


def _init_weights(model: nn.Module, bert_style: bool) -> None:
    """torchvision/BERT-style fixed initialisation (uses the global torch RNG, seeded by caller)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) or (isinstance(m, nn.Embedding) and bert_style):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        # LSTM weights keep PyTorch's uniform(+-1/sqrt(hidden)) and the translator's embedding
        # N(0, 1): with BERT's 0.02 embeddings the random LSTM's state would not depend on the
        # source sentence, and every input would decode to the same tokens.


@torch.no_grad()
def _calibrate_batchnorm(model: nn.Module, x: torch.Tensor) -> None:
    """Re-estimate batch-norm running statistics on ``x`` (exact averages, not momentum).

    Only the batch-norm layers switch to training mode, so dropout stays off (and draws nothing
    from the global RNG).
    """
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    if not bns:
        return
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration forward passes
        m.train()
    model(x)
    for m in bns:
        m.eval()


def build_model(name: str, seed: int = 0) -> nn.Module:
    """Build catalog network ``name`` in eval mode with a fixed seeded initialisation.

    The same ``(name, seed)`` gives bit-identical weights on every call and process. The global
    torch RNG state is saved and restored, so building a model never perturbs the caller's
    randomness.

    Args:
        name: a catalog name (``mnv1`` ... ``lstm_nmt``, see :func:`model_names`).
        seed: initialisation seed.

    Returns:
        The FP32 model on CPU, in eval mode.

    Raises:
        KeyError: ``name`` is not in the catalog (the message lists the valid names).
    """
    spec = _spec(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = spec.builder()
        _init_weights(model, bert_style=name == "mbert")
    model.eval()
    if spec.is_image:
        _calibrate_batchnorm(model, synthetic_input(name, batch=4, seed=10_000 + seed))
    return model


#: Networks whose catalog row counts embedding tables as FC layers (the translator's "embedding
#: and output projection as FC"); MobileBERT's row counts only linear layers.
EMBEDDINGS_AS_FC = frozenset({"lstm_nmt"})


def count_layers(model: nn.Module, embeddings_as_fc: bool = False) -> tuple[int, int, int]:
    """Count (conv, fc, rc) layers, the paper's structural state features.

    conv counts convolution modules (float or quantized; depthwise, pointwise and the 1x1
    convolutions of squeeze-excite blocks included), fc counts fully connected modules (float,
    statically or dynamically quantized), rc counts recurrent *layers* (an ``nn.LSTM`` with
    ``num_layers=2`` counts 2). Fused modules count once.

    Args:
        model: an FP32 or quantized model.
        embeddings_as_fc: also count embedding tables as FC layers (a lookup is a one-hot matrix
            product); the catalog does so for the translator but not for MobileBERT.

    Returns:
        ``(conv, fc, rc)``.
    """
    from torch.ao.nn import quantized as nnq
    from torch.ao.nn.quantized.dynamic.modules import rnn as nnqd

    conv = fc = rc = 0
    for m in model.modules():
        if isinstance(m, (nn.modules.conv._ConvNd, nnq.modules.conv._ConvNd)):
            conv += 1
        elif isinstance(m, (nn.Linear, nnq.Linear)) or (  # nnqd.Linear subclasses nnq.Linear
            embeddings_as_fc and isinstance(m, (nn.Embedding, nnq.Embedding))
        ):
            fc += 1
        elif isinstance(m, (nn.RNNBase, nnqd.RNNBase)):
            rc += m.num_layers
        elif isinstance(m, (nn.RNNCellBase, nnqd.RNNCellBase)):
            rc += 1
    return conv, fc, rc


def quantize_int8(model: nn.Module, name: str) -> nn.Module:
    """An INT8 copy of ``model`` (the original is left untouched), for CPU execution.

    Method, per network kind (all PyTorch's own ``torch.ao.quantization``, engine ``x86``,
    static post-training quantization with per-channel symmetric INT8 weights and per-tensor
    affine UINT8 activations from histogram observers, calibrated on a fixed seeded batch of 8
    synthetic images, :func:`synthetic_input` seed 20000):

    * networks torchvision ships a quantizable twin of (``mnv2``, ``mnv3l``, ``mnv3s``,
      ``incv1``, ``incv3``, ``rn50``): **eager mode, torchvision's recipe**: the twin from
      ``torchvision.models.quantization`` gets ``model``'s weights, ``fuse_model()`` folds
      conv+bn(+relu), then ``prepare``, calibration and ``convert``; its quant/dequant stubs
      and ``FloatFunctional`` adds are where torchvision put them;
    * the other convolutional networks (``mnv1``, ``mnasnet``, ``sqz``): **FX graph mode** with
      the default x86 qconfig mapping (conv+bn(+relu) folded), so conv, linear, add, concat and
      pooling all run as quantized kernels;
    * ``mbert`` and ``lstm_nmt``: **dynamic quantization** (INT8 weights, activations quantized
      on the fly) of every ``nn.Linear`` and ``nn.LSTM``; embeddings, attention softmax and
      NoNorm stay FP32, as in PyTorch's BERT/LSTM quantization recipes.

    Args:
        model: an FP32 model from :func:`build_model`.
        name: its catalog name (selects the method and the calibration input).

    Returns:
        The quantized model in eval mode (CPU only: quantized kernels have no CUDA backend).
    """
    from torch.ao.quantization import (
        convert,
        get_default_qconfig,
        get_default_qconfig_mapping,
        prepare,
        quantize_dynamic,
    )
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    spec = _spec(name)
    model = copy.deepcopy(model).cpu().eval()
    torch.backends.quantized.engine = "x86"
    with warnings.catch_warnings():
        # torch.ao.quantization announces its migration to torchao (and reduce_range's and the
        # quantized tensor constructors' deprecation); the API still works on torch 2.13.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.ao\.")
        if not spec.is_image:
            return quantize_dynamic(model, {nn.Linear, nn.LSTM, nn.LSTMCell},
                                    dtype=torch.qint8).eval()
        calibration = synthetic_input(name, batch=8, seed=20_000)
        twin_builder = TORCHVISION_BUILDERS.get(name, (None, None))[1]
        if twin_builder is not None:
            twin = twin_builder()
            twin.load_state_dict(model.state_dict())  # strict: same architecture, same weights
            twin.eval()
            twin.fuse_model(is_qat=False)
            twin.qconfig = get_default_qconfig("x86")
            prepare(twin, inplace=True)
            with torch.no_grad():
                twin(calibration)
            return convert(twin, inplace=True).eval()
        prepared = prepare_fx(model, get_default_qconfig_mapping("x86"),
                              example_inputs=(calibration[:1],))
        with torch.no_grad():
            prepared(calibration)
        return convert_fx(prepared).eval()


def top1(output: torch.Tensor, name: str) -> torch.Tensor:
    """The model's discrete decisions: class per image, start/end position, or token ids."""
    return output if _spec(name).output_is_tokens else output.argmax(-1)


@torch.no_grad()
def int8_agreement(name: str, n_inputs: int = 32, seed: int = 0, batch: int = 8) -> float:
    """Share of top-1 decisions on which the INT8 model agrees with the FP32 model.

    Decisions are the predicted class per image, the start and end positions of MobileBERT's
    span, and every decoded token of the translator (greedy decoding can diverge after a first
    disagreement, so this is a strict measure there). Inputs are ``n_inputs`` fixed synthetic
    requests (seed ``seed``).

    Because the weights are random, this measures how faithfully the INT8 path computes the FP32
    function, not a task-accuracy drop, and it is pessimistic: random networks have near-tied
    top-2 logits and (with batch norm) amplify small perturbations, so INT8 rounding flips
    decisions that a trained network's margins would keep. Use the catalog's published INT8
    accuracies for the reward, and this figure as a sanity check of the INT8 path.

    Args:
        name: a catalog network name.
        n_inputs: number of synthetic requests.
        seed: seed of both the weights and the inputs.
        batch: requests per forward pass (bounds memory).

    Returns:
        A fraction in [0, 1].
    """
    fp32 = build_model(name, seed)
    int8 = quantize_int8(fp32, name)
    x = synthetic_input(name, n_inputs, seed=1 + seed)
    same = total = 0
    for chunk in x.split(batch):
        a, b = top1(fp32(chunk), name), top1(int8(chunk), name)
        same += int((a == b).sum())
        total += a.numel()
    return same / total if total else math.nan
