"""Peak GPU memory of a training job and of feature extraction, estimated from the backbone's shape.

Notation: P parameters, P_t of them trained (P less the conv encoder's when it is frozen), batch B,
crop S samples (T = S / hop frames), hidden H, FFN width F, A attention heads, L transformer layers,
conv layers i with C_i channels and L_i = B·S / Πstride≤i output samples, a = bytes of an activation
(2 under bf16/fp16 autocast, 4 in fp32).

Training (`training_memory`), what the allocator holds at the end of the forward pass:

    weights      4·P                      fp32 master weights
                 + a·P   (bf16/fp16)      autocast's cast cache: low-precision copies of the weights
    gradients    4·P_t
    optimiser    8·P_t                    AdamW exp_avg and exp_avg_sq (fp32)
    activations  L · B·T·(c1·H + c2·F)·a  transformer blocks: inputs of q, k, v, out, FFN in/out,
                                          layer norms, residuals, dropout masks (c1 = 15, fitted),
                                          FFN pre- and post-GELU (c2 = 2)
               + L · B·A·T²·(2a + 1)      eager attention: scores, probabilities, dropout mask (also
                                          what CPU training with attention dropout runs: sdpa's math
                                          path); `sdpa` on CUDA (flash / memory-efficient kernels,
                                          the default) keeps B·A·T fp32 log-sum-exps instead
               + Σ_i c_conv·C_i·L_i·a     conv encoder when trained: conv output and GELU output
                                          (c_conv = 2, plus one fp32 tensor per norm); frozen: nothing
                                          kept, a transient of the two largest neighbouring layers (of
                                          one utterance for group-norm encoders, which gmptl runs one
                                          utterance at a time; of the batch for layer-norm ones)
               + B·T·(2·C_last + H)·4     feature projection (layer norm in, linear in, out)
               + Σ_heads 3·4·B·T·k        stage-1 frame heads: fp32 logits, log-softmax, its gradient
               + B·T·H·4 per utterance head (pooling input)

Extraction (`extraction_memory`, no gradients, `batch_seconds` of padded audio, B·S = that × rate):
weights 4·P plus, at the peak, the kept layers' outputs (n_layers·B·T·H·a), one block's working set
B·T·(4H + 2F)·a, and the conv encoder's two largest neighbouring layers (the whole batch: layer-norm
encoders run batched; group-norm ones one utterance at a time, so this over-estimates them).

Not counted: the CUDA context (`CONTEXT_BYTES`, added to `total` separately), allocator
fragmentation (the caching allocator's reserved memory runs ~10–20 % above its allocated peak) and
cuDNN/cuBLAS workspaces. The constants c1, c2, c_conv are counts of the tensors HF's HuBERT saves
for backward; `benchmarks/rehearsal.py` checks the activation term against the bytes actually saved.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

C_HIDDEN = 15  # H-wide tensors saved per transformer block (fitted, dropout masks included)
C_FFN = 2  # F-wide tensors saved per transformer block
C_CONV = 2  # tensors saved per conv layer (conv output, GELU output), besides norms
CONTEXT_BYTES = 600 * 2**20  # CUDA context and kernels, outside the allocator
PRECISION_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "auto": 2}  # auto = bf16 on CUDA


@dataclass(frozen=True)
class BackboneShape:
    """What the estimate needs to know about a backbone."""

    hidden: int
    layers: int
    ffn: int
    attention_heads: int
    conv_dim: tuple[int, ...]
    conv_stride: tuple[int, ...]
    params: int
    conv_params: int
    layer_norm_conv: bool  # every conv layer normalised (large style); else group norm on the first only

    @property
    def hop(self) -> int:
        return math.prod(self.conv_stride)


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak bytes by part; `total` adds them and the CUDA context."""

    weights: int
    gradients: int
    optimizer: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations + CONTEXT_BYTES


def shape_from_config(config) -> BackboneShape:
    """The shape of a transformers HuBERT/wav2vec2-style config; parameters counted on the meta device (no memory)."""
    from transformers import AutoModel

    with torch.device("meta"):
        model = AutoModel.from_config(config)
    conv = sum(p.numel() for p in model.feature_extractor.parameters())
    return BackboneShape(
        hidden=config.hidden_size,
        layers=config.num_hidden_layers,
        ffn=config.intermediate_size,
        attention_heads=config.num_attention_heads,
        conv_dim=tuple(config.conv_dim),
        conv_stride=tuple(config.conv_stride),
        params=sum(p.numel() for p in model.parameters()),
        conv_params=conv,
        layer_norm_conv=getattr(config, "feat_extract_norm", "group") == "layer",
    )


def activation_bytes(precision: str) -> int:
    if precision not in PRECISION_BYTES:
        raise ValueError(f"precision '{precision}' is not one of {', '.join(PRECISION_BYTES)}")
    return PRECISION_BYTES[precision]


def conv_lengths(shape: BackboneShape, samples: int) -> list[int]:
    """Output samples of every conv layer for `samples` input samples (strides only, kernels ignored)."""
    lengths, n = [], samples
    for stride in shape.conv_stride:
        n = n // stride
        lengths.append(n)
    return lengths


def conv_trained_bytes(shape: BackboneShape, samples: int, a: int) -> int:
    """Activations the conv encoder keeps for backward over `samples` input samples (batch included)."""
    total = 0
    for i, (channels, length) in enumerate(zip(shape.conv_dim, conv_lengths(shape, samples), strict=True)):
        normed = shape.layer_norm_conv or i == 0
        total += channels * length * (C_CONV * a + (4 if normed else 0))
    return total


def conv_transient_bytes(shape: BackboneShape, samples: int, a: int) -> int:
    """The largest pair of neighbouring conv tensors alive at once (frozen or no-grad encoder)."""
    sizes = [samples] + [c * n for c, n in zip(shape.conv_dim, conv_lengths(shape, samples), strict=True)]
    return max(x + y for x, y in zip(sizes, sizes[1:], strict=False)) * a


def transformer_bytes(shape: BackboneShape, batch: int, frames: int, a: int, attention: str) -> int:
    """Activations the transformer blocks keep for backward."""
    per_layer = batch * frames * (C_HIDDEN * shape.hidden + C_FFN * shape.ffn) * a
    if attention == "eager":
        per_layer += batch * shape.attention_heads * frames * frames * (2 * a + 1)
    elif attention == "sdpa":
        per_layer += batch * shape.attention_heads * frames * 4
    else:
        raise ValueError(f"attention must be 'sdpa' or 'eager', got '{attention}'")
    return shape.layers * per_layer


def training_memory(
    shape: BackboneShape,
    *,
    batch_size: int,
    crop_s: float,
    precision: str,
    freeze_feature_encoder: bool,
    frame_heads: tuple[int, ...] = (),
    utterance_heads: int = 1,
    sample_rate: int = 16000,
    attention: str = "sdpa",
) -> MemoryEstimate:
    """Peak bytes of one training job (formula in the module docstring).

    `frame_heads`: k of every stage-1 GMP head (one linear head per scale); `utterance_heads`:
    emotion/gender heads (pooled); `crop_s`: `train.max_crop_s` (every utterance of a batch at most that long).
    """
    a = activation_bytes(precision)
    samples = int(crop_s * sample_rate)
    frames = samples // shape.hop
    head_params = sum((shape.hidden + 1) * k for k in frame_heads) + utterance_heads * (shape.hidden + 1) * 4
    params = shape.params + head_params
    trained = params - (shape.conv_params if freeze_feature_encoder else 0)
    weights = 4 * params + (a * params if a < 4 else 0)
    if freeze_feature_encoder:  # transient: group-norm encoders run one utterance at a time, layer-norm ones batched
        conv = conv_transient_bytes(shape, (batch_size if shape.layer_norm_conv else 1) * samples, a)
    else:
        conv = conv_trained_bytes(shape, batch_size * samples, a)
    bt = batch_size * frames
    activations = (
        transformer_bytes(shape, batch_size, frames, a, attention)
        + conv
        + bt * (2 * shape.conv_dim[-1] + shape.hidden) * 4
        + sum(3 * 4 * bt * k for k in frame_heads)
        + utterance_heads * bt * shape.hidden * 4
    )
    return MemoryEstimate(weights, 4 * trained, 8 * trained, activations)


def extraction_memory(
    shape: BackboneShape, *, batch_seconds: float, precision: str, kept_layers: int, sample_rate: int = 16000
) -> MemoryEstimate:
    """Peak bytes of feature extraction with `batch_seconds` of padded audio per batch (`features.batch_seconds`)."""
    a = activation_bytes(precision)
    samples = int(batch_seconds * sample_rate)
    frames = samples // shape.hop
    activations = (
        kept_layers * frames * shape.hidden * a
        + frames * (4 * shape.hidden + 2 * shape.ffn) * a
        + conv_transient_bytes(shape, samples, a)
    )
    return MemoryEstimate(4 * shape.params, 0, 0, activations)


def fits(estimate: MemoryEstimate, gpu_gib: float) -> bool:
    """Whether the estimate, with 15 % for allocator fragmentation, fits in `gpu_gib` GiB."""
    return estimate.total * 1.15 <= gpu_gib * 2**30
