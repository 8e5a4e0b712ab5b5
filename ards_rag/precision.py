"""Scoring precision: run a trained model's linear layers in bfloat16 or FP8 for faster scoring.

A run scores in the precision it was trained in (``model``): a 4-bit QLoRA model keeps its
bitsandbytes NF4 weights, dequantized on the fly at every matmul, plus the LoRA adapter as a
separate small matmul. For scoring only, :func:`convert_for_scoring` can instead

- ``bf16``: dequantize every linear layer once, merge the LoRA adapter into it, and keep a plain
  bfloat16 ``nn.Linear`` (about 2 bytes per parameter: 13.5 GB for a 7B model);
- ``fp8``: the same merged weights stored as FP8 (e4m3) with one scale per output row, and each
  input row quantized to FP8 with its own scale at run time; the matmul is ``torch._scaled_mm``
  (about 1 byte per parameter: 6.7 GB for a 7B model). NVIDIA GPUs run it on FP8 tensor cores
  from compute capability 8.9 (Ada, Hopper) on; PyTorch also runs it on CPUs (used by the tests).

Both change the scores slightly (``benchmarks/predict_speed.py`` reports how much against the
run's own precision); the run's threshold was chosen in its own precision.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

from .errors import ConfigError

logger = logging.getLogger(__name__)

PRECISIONS = ("model", "bf16", "fp8")
FP8_MAX = 448.0  # largest finite float8_e4m3fn value
_SCALE_FLOOR = 1e-12  # an all-zero row gets this scale instead of zero (no division by zero)


def check_precision(precision: str, device: Any) -> None:
    """Refuse an unknown precision, or FP8 on a GPU without FP8 matmuls (before compute 8.9)."""
    import torch

    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    dev = torch.device(device)
    if precision == "fp8" and dev.type == "cuda":
        major, minor = torch.cuda.get_device_capability(dev)
        if (major, minor) < (8, 9):
            raise ConfigError(
                f"precision fp8 needs an NVIDIA GPU of compute capability 8.9 or newer (Ada, "
                f"Hopper); this one is {major}.{minor}: use --precision bf16 or model"
            )


_MARGIN = 1.05  # scales a little above amax / 448: rounding can never push a value past 448


def _quantize(x: Any, per_row: bool) -> tuple[Any, Any]:
    """``x`` (activations, or a float32 weight) as FP8 e4m3 and the float32 scale(s) that undo
    it: one per row, or one for the whole tensor. FP8 keeps 3 mantissa bits at any magnitude, so
    the margin costs no precision."""
    import torch

    if per_row:
        amax = torch.linalg.vector_norm(x, ord=float("inf"), dim=-1, keepdim=True)
    else:
        amax = torch.linalg.vector_norm(x, ord=float("inf")).reshape([1] * x.dim())
    inv = (FP8_MAX / (amax.float() * _MARGIN).clamp(min=_SCALE_FLOOR)).to(x.dtype)
    return (x * inv).to(torch.float8_e4m3fn), 1.0 / inv.float()


class _SharedInput:
    """The last input quantized, reused while the same tensor comes again: the q/k/v
    projections (and gate/up) of a decoder layer read one tensor, quantized once."""

    def __init__(self, quantize: Any) -> None:
        self.quantize = quantize
        self.ref: Any = None
        self.value: Any = None

    def get(self, x: Any, per_row: bool) -> Any:
        if self.ref is not None and self.ref() is x:
            return self.value
        try:
            self.value = self.quantize(x, per_row)
        except Exception as exc:  # noqa: BLE001 - a compiled quantizer that cannot build here
            if self.quantize is _quantize:
                raise
            logger.warning("FP8 input quantizer: torch.compile failed (%s); running it eagerly",
                           str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
            self.quantize = _quantize
            self.value = _quantize(x, per_row)
        self.ref = weakref.ref(x)
        return self.value


def _fp8_linear_class() -> type:
    """The FP8 linear module class (built on first use: torch is imported lazily)."""
    import torch

    class _Fp8Linear(torch.nn.Module):
        """``y = x W^T + b`` with W and x in FP8: scales per output row of W and per row of x
        (``per_row``), or one per tensor."""

        def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, out_dtype: torch.dtype,
                     shared: _SharedInput, per_row: bool = True) -> None:
            super().__init__()
            q, scale = _quantize(weight.detach().float(), per_row)  # scale: (out, 1) or (1, 1)
            self.register_buffer("weight", q)  # (out, in), row-major: its .t() is column-major
            self.register_buffer("weight_scale", scale.t().contiguous() if per_row else scale.reshape(()))
            self.register_buffer("bias", None if bias is None else bias.detach().to(out_dtype))
            self.out_dtype = out_dtype
            self.per_row = per_row
            self.shared = shared
            self.in_features = int(weight.shape[1])
            self.out_features = int(weight.shape[0])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.dtype != self.out_dtype:
                x = x.to(self.out_dtype)
            xq, scale = self.shared.get(x, self.per_row)
            out = torch._scaled_mm(xq.reshape(-1, xq.shape[-1]), self.weight.t(),
                                   scale_a=scale.reshape(-1, 1) if self.per_row else scale.reshape(()),
                                   scale_b=self.weight_scale, bias=self.bias, out_dtype=self.out_dtype,
                                   use_fast_accum=True)
            return out.reshape(*x.shape[:-1], self.out_features)

        def extra_repr(self) -> str:
            return (f"in_features={self.in_features}, out_features={self.out_features}, fp8_e4m3, "
                    f"{'row' if self.per_row else 'tensor'} scales")

    return _Fp8Linear


def _dense_weight(layer: Any) -> Any:
    """The float32 weight of a linear layer: an ``nn.Linear``'s own, or a bitsandbytes 4-bit
    layer's dequantized one."""
    weight = layer.weight
    quant_state = getattr(weight, "quant_state", None)
    if quant_state is not None:
        import bitsandbytes.functional as bnbf

        return bnbf.dequantize_4bit(weight.data, quant_state).float()
    return weight.detach().float()


def _lora_delta(layer: Any) -> Any:
    """The merged LoRA update of a PEFT LoRA layer (active adapters), or None."""
    delta = None
    for name in getattr(layer, "active_adapters", []) or []:
        if name in getattr(layer, "lora_A", {}) and name not in getattr(layer, "merged_adapters", []):
            d = layer.get_delta_weight(name).float()
            delta = d if delta is None else delta + d
    return delta


def _linear_layers(model: Any) -> list[tuple[Any, str, Any]]:
    """(parent, attribute, layer) for every linear layer to convert: PEFT LoRA layers (with their
    base layer), and plain or 4-bit linear layers outside them; the output head is left out (it
    runs on one position per patient)."""
    import torch
    from peft.tuners.lora import LoraLayer

    found: list[tuple[Any, str, Any]] = []

    def visit(module: Any) -> None:
        for name, child in module.named_children():
            if name == "lm_head":
                continue
            if isinstance(child, (LoraLayer, torch.nn.Linear)):
                found.append((module, name, child))
                continue  # a LoRA layer's base layer and adapters go with it
            visit(child)

    visit(model)
    return found


def convert_for_scoring(model: Any, precision: str, compute_dtype: Any = None, *,
                        fp8_per_row: bool = True, compile_quantizer: bool | None = None) -> int:
    """Convert ``model`` (in place) to run in ``precision``; return the number of linear layers
    converted. ``model``: a PEFT or plain transformers causal LM, quantized (bitsandbytes 4-bit)
    or not. ``compute_dtype``: the activation dtype (default bfloat16). ``fp8_per_row``: FP8
    scales per row (weights: output rows; inputs: tokens) rather than per tensor.
    ``compile_quantizer``: fuse the input quantization into one kernel with ``torch.compile``
    (default: on a CUDA device; it falls back to the eager version if compiling fails).

    ``model`` precision casts nothing but the leftover float32 layers of a quantized model on a
    GPU (norms, embeddings, output head, which Ludwig keeps in float32 for training) to the
    compute dtype, so that the residual stream runs in that dtype as under training's autocast.
    ``bf16`` and ``fp8`` merge the LoRA adapter into dense weights (no adapter matmul left) and
    replace each linear layer; every other floating parameter is cast to the compute dtype.
    Scoring only: the model cannot be trained or saved as a Ludwig model afterwards.
    """
    import torch

    dtype = compute_dtype or torch.bfloat16
    layers = _linear_layers(model) if precision in ("bf16", "fp8") else []
    fp8_cls = shared = None
    if precision == "fp8":
        fp8_cls = _fp8_linear_class()
        if compile_quantizer is None:
            compile_quantizer = any(p.device.type == "cuda" for p in model.parameters())
        shared = _SharedInput(torch.compile(_quantize, dynamic=True) if compile_quantizer else _quantize)
    converted = 0
    for parent, name, layer in layers:
        base = layer.get_base_layer() if hasattr(layer, "get_base_layer") else layer
        device = base.weight.device
        weight = _dense_weight(base)
        delta = _lora_delta(layer)
        if delta is not None:
            weight = weight + delta.to(weight.device)
        bias = getattr(base, "bias", None)
        out_f, in_f = weight.shape
        if fp8_cls is not None and in_f % 16 == 0 and out_f % 16 == 0:
            new = fp8_cls(weight, bias, dtype, shared, fp8_per_row)
        else:  # bf16, or shapes FP8 matmuls do not take
            new = torch.nn.Linear(in_f, out_f, bias=bias is not None, device="meta")
            new.weight = torch.nn.Parameter(weight.to(dtype), requires_grad=False)
            if bias is not None:
                new.bias = torch.nn.Parameter(bias.detach().to(dtype), requires_grad=False)
        setattr(parent, name, new.to(device))
        converted += 1
    quantized = any(getattr(p, "quant_state", None) is not None for p in model.parameters())
    if precision != "model" or quantized:
        for p in model.parameters():
            if p.is_floating_point() and p.dtype != dtype and getattr(p, "quant_state", None) is None:
                p.data = p.data.to(dtype)
    if converted:
        logger.info("scoring precision %s: %d linear layers converted", precision, converted)
    return converted
