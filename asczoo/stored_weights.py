"""The stored form of quantised (int8) and half-precision (fp16) models: how their tensors are written
to ``model.safetensors`` and read back into a model built from ``config.json``.

This is part of the model file format (beside :mod:`asczoo.hub.files`, which writes the folder, and
:mod:`asczoo.models.pretrained`, which loads it), so that loading any model never depends on the tool
that quantises one (:mod:`asczoo.deploy.quantize`). The pieces:

- :class:`QuantizedLayer`: an int8 ``Conv2d``/``Conv3d``/``Linear`` whose state is plain tensors
  (int8 weights, per-channel weight scales, float bias, input/output scale and zero point), so a
  quantised model saves as safetensors and its packed kernel is rebuilt on first use;
- :func:`fold_batch_norms`: the batch norms folded into their convolutions before int8 layers go in;
- :func:`restore`: gives a freshly built float model the structure recorded in ``config.json``'s
  ``quantization`` entry, before its weights load;
- :func:`stored_state` / :func:`loaded_state`: the state dict written (fp16 parameters as fp16) and
  its inverse on load; :func:`stored_parameter_bytes`: the bytes of the stored weights, as DCASE counts;
- :func:`value_problems`: the stored values that would load but make no sense (a zero or huge int8
  scale, a zero point outside its dtype, a non-positive normalisation std), refused on load.
"""

from __future__ import annotations

import copy
from typing import Any, Iterable, Sequence

import torch
from torch import nn

QUANTIZABLE = (nn.Conv2d, nn.Conv3d, nn.Linear)
SCHEMES = ("int8", "fp16")


class QuantizationError(ValueError):
    """A model (part) that cannot be quantised; the message names the part and why."""


def _activation_qparams(low: float, high: float) -> tuple[float, int]:
    """uint8 affine scale and zero point for the range [low, high] (widened to hold 0), 7-bit range."""
    low, high = min(low, 0.0), max(high, 0.0)
    qmax = 127  # reduce_range: see the module docstring
    scale = max((high - low) / qmax, 1e-8)
    zero_point = int(min(qmax, max(0, round(-low / scale))))
    return float(scale), zero_point


class QuantizedLayer(nn.Module):
    """An int8 ``Conv2d``/``Conv3d``/``Linear``: quantise the input, run the int8 kernel, dequantise.

    The state (``weight`` int8, ``weight_scale`` per output channel, ``bias`` float, input and output
    scale and zero point) is plain tensors; the packed kernel is built on first use after loading.
    """

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        if not isinstance(layer, QUANTIZABLE):
            raise TypeError(f"QuantizedLayer wraps {', '.join(t.__name__ for t in QUANTIZABLE)}, not {type(layer).__name__}")
        self.kind = type(layer).__name__
        self.options: dict[str, Any] = {}
        if isinstance(layer, nn.Linear):
            self.options = {"in_features": layer.in_features, "out_features": layer.out_features}
        else:
            if layer.padding_mode != "zeros":
                raise QuantizationError(f"{self.kind} with padding_mode={layer.padding_mode!r} has no int8 kernel")
            self.options = {key: getattr(layer, key) for key in
                            ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups")}
        out = layer.weight.shape[0]
        self.register_buffer("weight", torch.zeros(layer.weight.shape, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(out))
        self.register_buffer("bias", torch.zeros(out))
        for name in ("input", "output"):
            self.register_buffer(f"{name}_scale", torch.ones(()))
            self.register_buffer(f"{name}_zero_point", torch.zeros((), dtype=torch.int64))
        self._forget_kernel()

    def _forget_kernel(self) -> None:
        # kept out of the module tree (a plain attribute, not a submodule): the packed kernel is
        # derived state, not saved in the state dict
        self.__dict__["_kernel"] = None

    @torch.no_grad()
    def set_from(self, layer: nn.Module, inputs: tuple[float, float], outputs: tuple[float, float]) -> None:
        """Quantise ``layer``'s weights (symmetric per channel) and set the calibrated activation ranges."""
        w = layer.weight.detach().float()
        scale = (w.flatten(1).abs().amax(dim=1) / 127).clamp_min(1e-12)
        self.weight.copy_(torch.round(w / scale.view(-1, *[1] * (w.dim() - 1))).clamp(-127, 127).to(torch.int8))
        self.weight_scale.copy_(scale)
        self.bias.copy_(layer.bias.detach().float() if layer.bias is not None else torch.zeros_like(self.bias))
        for name, (low, high) in (("input", inputs), ("output", outputs)):
            s, z = _activation_qparams(low, high)
            getattr(self, f"{name}_scale").fill_(s)
            getattr(self, f"{name}_zero_point").fill_(z)
        self._forget_kernel()

    def _load_from_state_dict(self, *args, **kwargs):
        self._forget_kernel()
        return super()._load_from_state_dict(*args, **kwargs)

    def kernel(self) -> nn.Module:
        if self._kernel is None:
            import torch.ao.nn.quantized as nnq

            scale = self.weight_scale.double().cpu()
            shape = (-1, *[1] * (self.weight.dim() - 1))
            qweight = torch.quantize_per_channel((self.weight.cpu().double() * scale.view(shape)).float(), scale,
                                                 torch.zeros(scale.shape, dtype=torch.long), 0, torch.qint8)
            if self.kind == "Linear":
                module = nnq.Linear(self.options["in_features"], self.options["out_features"])
            else:
                module = getattr(nnq, self.kind)(**self.options)
            module.set_weight_bias(qweight, self.bias.cpu())
            module.scale, module.zero_point = float(self.output_scale), int(self.output_zero_point)
            self.__dict__["_kernel"] = module
        return self.__dict__["_kernel"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            raise RuntimeError("int8 models run on the CPU (torch's quantized kernels are CPU-only); load with device='cpu'")
        shape = x.shape
        if self.kind == "Linear" and x.dim() != 2:
            x = x.reshape(-1, shape[-1])
        q = torch.quantize_per_tensor(x.float().contiguous(), float(self.input_scale), int(self.input_zero_point), torch.quint8)
        y = self.kernel()(q).dequantize()
        return y.reshape(*shape[:-1], y.shape[-1]) if self.kind == "Linear" and len(shape) != 2 else y

    def extra_repr(self) -> str:
        return f"{self.kind}, int8 weights {tuple(self.weight.shape)}"


# -- structure ---------------------------------------------------------------------------------------------

def replace_module(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, module)


def fold_batch_norms(model: nn.Module, pairs: Iterable[Sequence[str]]) -> None:
    """Fold each batch norm into its convolution (eval statistics) and replace it with ``Identity``."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for conv_path, bn_path in pairs:
        conv, bn = model.get_submodule(conv_path), model.get_submodule(bn_path)
        replace_module(model, conv_path, fuse_conv_bn_eval(conv.eval(), bn.eval()))
        replace_module(model, bn_path, nn.Identity())


# -- the stored state --------------------------------------------------------------------------------------

def scheme_of(model: nn.Module) -> str | None:
    """The stored form of ``model``'s weights: ``"int8"`` or ``"fp16"`` (``asczoo quantize``), None for float32."""
    return (getattr(model, "quantization", None) or {}).get("scheme")


def held_as_stored(model: nn.Module) -> nn.Module:
    """``model`` (in place) with an fp16 model's parameters and buffers held in fp16, as saved: the
    DCASE organisers' counter (the inference template's ``complexity.py``) counts bytes from the dtypes
    of ``parameters()`` as loaded, so widening them to float32 would count 4 bytes a parameter."""
    if scheme_of(model) == "fp16":
        model.half()  # buffers too (normalisation statistics, batch-norm running stats): one dtype inside
    return model


def stored_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict to save: for fp16 models the parameters as fp16, otherwise as they are."""
    state = model.state_dict()
    if scheme_of(model) == "fp16":
        params = {n for n, _ in model.named_parameters()}
        state = {k: (v.half() if k in params and v.is_floating_point() else v) for k, v in state.items()}
    return state


#: state entries that are not parameters: quantisation scales and zero points, normalisation statistics
_NOT_WEIGHTS = ("_scale", "_zero_point", "norm_mean", "norm_std", "num_batches_tracked", "running_mean", "running_var")


def is_weight(key: str, tensor: torch.Tensor) -> bool:
    return not key.endswith(_NOT_WEIGHTS)


def stored_parameter_bytes(tensors: dict[str, torch.Tensor]) -> int:
    """Bytes of the stored weights (after quantising: the int8 tensors, and the float biases and
    parameters kept in float), without the per-channel scales, zero points and normalisation
    statistics (as DCASE counts parameters)."""
    return sum(t.numel() * t.element_size() for k, t in tensors.items() if is_weight(k, t))


def loaded_state(model: nn.Module, state: dict[str, torch.Tensor], quantization: dict[str, Any] | None,
                 ) -> dict[str, torch.Tensor]:
    """The inverse of :func:`stored_state`: an fp16 model's parameters, stored as fp16
    by design, widened to the float32 of the model they load into (exact: they are fp16 values). Every
    other tensor is left as stored, so strict loading still refuses any other dtype mismatch."""
    if (quantization or {}).get("scheme") != "fp16":
        return state
    own = model.state_dict()
    params = {n for n, _ in model.named_parameters()}
    return {k: (v.to(own[k].dtype) if k in params and k in own and v.dtype == torch.float16
                and own[k].dtype == torch.float32 else v) for k, v in state.items()}


def restore(model: nn.Module, quantization: dict[str, Any]) -> nn.Module:
    """Give a freshly built float ``model`` the structure recorded in ``config.json``'s ``quantization``
    entry (folded batch norms, :class:`QuantizedLayer` in place of the listed layers), before its
    weights load."""
    scheme = quantization.get("scheme")
    if scheme not in SCHEMES:
        raise ValueError(f"config.json: quantization scheme {scheme!r} is not one of {', '.join(SCHEMES)}")
    if scheme == "int8":
        try:
            fold_batch_norms(model, quantization.get("folded") or [])
            for path in quantization.get("layers") or []:
                replace_module(model, path, QuantizedLayer(model.get_submodule(path)))
        except (AttributeError, TypeError) as exc:
            raise ValueError(f"config.json: the quantization entry does not fit the model's structure ({exc})") from None
    model.quantization = copy.deepcopy(dict(quantization))
    return model


# -- values that load but make no sense ------------------------------------------------------------------

#: int8 scales (``weight_scale`` per output channel, ``input_scale``, ``output_scale``) lie within this
#: range: quantisation clamps them at 1e-12 (weights) and 1e-8 (activations); a scale of 0 makes every
#: weight 0 (one class for everything), a huge one rounds every activation to the zero point (all-zero
#: logits). 1e4 is a weight or activation range of about a million, far beyond any trained model's.
MIN_QUANT_SCALE, MAX_QUANT_SCALE = 1e-13, 1e4
#: the quantised activations are quint8: a zero point outside 0..255 fails only at the first forward
QUINT8_RANGE = (0, 255)
#: the normalisation statistics: std in (0, MAX], |mean| at most MAX (log-mel features are a few tens)
MAX_NORMALIZATION = 1e6


def value_problems(model: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """What in ``state`` (keys of ``model``'s state dict, shapes already checked) would load but could
    not be a model: ``KEY holds VALUE; expected ...`` for each offending tensor.

    Checked: each :class:`QuantizedLayer`'s scales (finite, within
    [:data:`MIN_QUANT_SCALE`, :data:`MAX_QUANT_SCALE`]), zero points (within :data:`QUINT8_RANGE`) and
    per-channel scale count (one per output channel); ``norm_mean``/``norm_std`` (finite, std > 0, within
    :data:`MAX_NORMALIZATION`); batch-norm ``running_var`` (finite, >= 0, else the square root is NaN).
    """
    out: list[str] = []

    def worst(t: torch.Tensor, bad: torch.Tensor) -> str:
        value = t.flatten()[bad.flatten().nonzero()[0, 0]].item()
        return f"{value!r}" + (f" (and {int(bad.sum()) - 1} more)" if int(bad.sum()) > 1 else "")

    def need(key: str, bad_of: Any, expected: str) -> None:
        t = state.get(key)
        if t is None:
            return
        bad = bad_of(t.double() if t.is_floating_point() else t)
        if bool(bad.any()):
            out.append(f"{key} holds {worst(t, bad)}; expected {expected}")

    def scale_bad(t: torch.Tensor) -> torch.Tensor:
        return ~torch.isfinite(t) | (t < MIN_QUANT_SCALE) | (t > MAX_QUANT_SCALE)

    low, high = QUINT8_RANGE
    for path, module in model.named_modules():
        prefix = f"{path}." if path else ""
        if isinstance(module, QuantizedLayer):
            for name in ("weight_scale", "input_scale", "output_scale"):
                need(prefix + name, scale_bad, f"a finite scale from {MIN_QUANT_SCALE:g} to {MAX_QUANT_SCALE:g}")
            for name in ("input_zero_point", "output_zero_point"):
                need(prefix + name, lambda t: (t < low) | (t > high),
                     f"a quint8 zero point from {low} to {high}")
            scale, weight = state.get(prefix + "weight_scale"), state.get(prefix + "weight")
            if scale is not None and weight is not None and tuple(scale.shape) != (weight.shape[0],):
                out.append(f"{prefix}weight_scale has shape {tuple(scale.shape)}; expected ({weight.shape[0]},), "
                           f"one scale per output channel of {prefix}weight")
        elif isinstance(module, nn.modules.batchnorm._NormBase) and module.track_running_stats:
            need(prefix + "running_var", lambda t: ~torch.isfinite(t) | (t < 0), "a finite variance >= 0")
    need("norm_std", lambda t: ~torch.isfinite(t) | (t <= 0) | (t > MAX_NORMALIZATION),
         f"a finite std > 0 and at most {MAX_NORMALIZATION:g}")
    need("norm_mean", lambda t: ~torch.isfinite(t) | (t.abs() > MAX_NORMALIZATION),
         f"a finite mean within +-{MAX_NORMALIZATION:g}")
    return out
