"""PyTorch modules that compute exactly what CIANNA's layers compute.

Each module keeps CIANNA's own parameters (weights with the bias weight in the last column,
per-group gamma/beta, the dense matrix with its bias-neuron column) so that the network can be
saved back to a CIANNA file unchanged; the PyTorch-friendly views are derived on the fly.
Tensors are ``[N, C, H, W]`` (2-D networks) or ``[N, C, D, H, W]`` (3-D networks).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._spec import Activation, ConvLayer, DenseLayer, NormLayer, PoolLayer, YoloHead

NORM_EPSILON = 1e-3


def apply_activation(x: torch.Tensor, activation: Activation) -> torch.Tensor:
    """CIANNA activations on a conv/pool map (softmax over the whole C*D*H*W map per example)."""
    kind = activation.kind
    if kind == "LIN":
        return x
    if kind == "RELU":
        return cianna_relu(x, activation.leaking, activation.saturation)
    if kind == "LOGI":
        t = torch.clamp(-activation.beta * x, max=activation.saturation)
        return 1.0 / (1.0 + torch.exp(t))
    if kind == "SMAX":
        flat = x.reshape(x.shape[0], -1)
        return torch.softmax(flat.float(), dim=1).to(x.dtype).reshape(x.shape)
    raise ValueError(f"activation {kind} cannot be applied here")


def cianna_relu(x: torch.Tensor, leak: float, saturation: float) -> torch.Tensor:
    """CIANNA's leaky, saturating ReLU in two elementwise passes instead of seven.

    ``lerp(clamp(x, 0, S), x, L) = c + L*(x - c)`` gives ``L*x`` below zero, ``x`` itself on
    ``(0, S]`` and ``S + L*(x - S)`` above S: CIANNA's three branches. It is bit-identical to
    the branch-wise form up to S and within one rounding above it (where a fused multiply-add may
    round once instead of twice). The activation maps are the largest tensors of a YOLO network
    (32 x 512 x 512 values per patch after the first SDC1 layer), so memory passes, not
    arithmetic, set their cost: this form was ~4x cheaper on CPU. Autograd flows through both
    ops (slope 1 inside, L outside).
    """
    clamped = torch.clamp(x, min=0.0, max=saturation)
    if clamped.requires_grad:
        return torch.lerp(clamped, x, leak)
    return clamped.lerp_(x, leak)  # ``clamped`` is a fresh tensor: write the result over it


def _version_or_none(tensor: torch.Tensor) -> int | None:
    """The tensor's in-place version counter, or None where it keeps none (inference tensors)."""
    try:
        return tensor._version
    except RuntimeError:
        return None


class CiannaConv(nn.Module):
    """Convolution with CIANNA's zero insertion (int_padding), bias scaling and dropout scaling."""

    def __init__(self, layer: ConvLayer, in_channels: int, spatial_dims: int, bias_value: float) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims
        fw, fh, fd = layer.f_size
        expected = in_channels * fw * fh * fd + 1
        if layer.weights.shape != (layer.nb_filters, expected):
            raise ValueError(
                f"weights have shape {layer.weights.shape}, expected ({layer.nb_filters}, {expected}) "
                f"for {in_channels} input channels"
            )
        self.weight_rows = nn.Parameter(torch.from_numpy(layer.weights.copy()))
        self.kernel = (fd, fh, fw)
        self.in_channels = in_channels
        self.stride = layer.stride[::-1]  # (D, H, W)
        self.padding = layer.padding[::-1]
        self.int_padding = layer.int_padding[::-1]
        self.bias_value = float(bias_value)
        self.dropout = float(layer.dropout)
        self.activation = layer.activation
        self.yolo = YoloActivation(layer.yolo) if layer.yolo is not None else None
        self.memory_format = torch.contiguous_format
        self._cached: tuple[torch.Tensor, torch.Tensor] | None = None
        self._cache_key: tuple | None = None
        if spatial_dims == 2 and (fd != 1 or layer.stride[2] != 1 or layer.padding[2] or layer.int_padding[2]):
            raise ValueError("a 2-D network cannot hold a conv with a depth extent")

    def kernel_and_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The PyTorch kernel ``[F, C, (D,) H, W]`` and the effective bias (bias weight x bias_value)."""
        fd, fh, fw = self.kernel
        kernel = self.weight_rows[:, :-1].reshape(-1, self.in_channels, fd, fh, fw)
        if self.spatial_dims == 2:
            kernel = kernel[:, :, 0]
        return kernel, self.weight_rows[:, -1] * self.bias_value

    def _insert_zeros(self, x: torch.Tensor) -> torch.Tensor:
        dims = self.int_padding[-self.spatial_dims :]
        if not any(dims):
            return x
        sizes = list(x.shape[:2])
        index = [slice(None), slice(None)]
        for axis, gap in enumerate(dims):
            n = x.shape[2 + axis]
            sizes.append(n + (n - 1) * gap)
            index.append(slice(None, None, gap + 1))
        out = x.new_zeros(sizes)
        out[tuple(index)] = x
        return out

    def set_memory_format(self, memory_format: torch.memory_format) -> None:
        """Lay the cached 2-D kernel out in this format (channels_last makes cuDNN run NHWC)."""
        self.memory_format = memory_format if self.spatial_dims == 2 else torch.contiguous_format
        self._cached = self._cache_key = None

    def _kernel_for(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Kernel and bias in the input's dtype, cached between calls when no gradient is wanted.

        Deriving the kernel slices the ``[F, C*k*k + 1]`` rows (a copy of every weight: 50 MB per
        forward for SDC1 in fp32) and casts it; inference pays that once per weight version,
        dtype, device and memory format instead of once per call. With gradients wanted (training)
        the kernel is rebuilt every call so that autograd reaches ``weight_rows``.
        """
        wants_grad = torch.is_grad_enabled() and self.weight_rows.requires_grad
        version = _version_or_none(self.weight_rows)
        if wants_grad or version is None or torch.compiler.is_compiling():
            kernel, bias = self.kernel_and_bias()
            return kernel.to(x.dtype), bias.to(x.dtype)
        key = (
            x.dtype, x.device, self.memory_format, self.weight_rows.data_ptr(), version,
            torch.is_inference_mode_enabled(),
        )
        if self._cached is None or self._cache_key != key:
            kernel, bias = self.kernel_and_bias()
            kernel = kernel.to(x.dtype).contiguous(memory_format=self.memory_format)
            self._cached, self._cache_key = (kernel, bias.to(x.dtype).contiguous()), key
        return self._cached

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel, bias = self._kernel_for(x)
        x = self._insert_zeros(x)
        if self.spatial_dims == 2:
            y = F.conv2d(x, kernel, bias, stride=self.stride[1:], padding=self.padding[1:])
        else:
            y = F.conv3d(x, kernel, bias, stride=self.stride, padding=self.padding)
        if self.dropout:
            y = y * (1.0 - self.dropout) if y.requires_grad else y.mul_(1.0 - self.dropout)
        if self.yolo is not None:
            return self.yolo(y)
        return apply_activation(y, self.activation)


class CiannaPool(nn.Module):
    """MAX pool with padding ignored (-inf) and AVG pool that averages in-bounds cells only."""

    def __init__(self, layer: PoolLayer, spatial_dims: int, in_size: tuple[int, int, int]) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims
        if layer.is_global:
            window, stride, padding = in_size[::-1], in_size[::-1], (0, 0, 0)
        else:
            window, stride, padding = layer.p_size[::-1], layer.stride[::-1], layer.padding[::-1]
        keep = slice(3 - spatial_dims, 3)
        self.window, self.stride, self.padding = window[keep], stride[keep], padding[keep]
        self.pool_type = layer.pool_type
        self.dropout = float(layer.dropout)
        self.activation = layer.activation

    def _pad(self, x: torch.Tensor, value: float) -> torch.Tensor:
        if not any(self.padding):
            return x
        pads: list[int] = []
        for p in reversed(self.padding):  # F.pad wants the last dimension first
            pads += [p, p]
        return F.pad(x, pads, value=value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pool_max = F.max_pool2d if self.spatial_dims == 2 else F.max_pool3d
        pool_avg = F.avg_pool2d if self.spatial_dims == 2 else F.avg_pool3d
        if self.pool_type == "MAX":
            y = pool_max(self._pad(x, float("-inf")), self.window, self.stride)
            y = torch.where(torch.isinf(y) & (y < 0), torch.zeros_like(y), y)
        else:
            total = pool_avg(self._pad(x, 0.0), self.window, self.stride)
            if any(self.padding):
                ones = torch.ones((1, 1) + tuple(x.shape[2:]), dtype=x.dtype, device=x.device)
                count = pool_avg(self._pad(ones, 0.0), self.window, self.stride)
                y = total / count
            else:
                y = total
        if self.dropout:
            y = y * (1.0 - self.dropout)
        return apply_activation(y, self.activation)


class CiannaGroupNorm(nn.Module):
    """Group norm with per-group gamma/beta, eps 1e-3, biased variance and untouched `set_off` groups.

    ``apply_activation`` selects CUDA CIANNA's behaviour (activation applied, as models are
    trained) or CPU CIANNA's (activation skipped).
    """

    def __init__(self, layer: NormLayer, channels: int, apply_activation_flag: bool) -> None:
        super().__init__()
        self.group_size = layer.group_size
        self.nb_group = channels // layer.group_size
        self.set_off = layer.set_off
        self.gamma = nn.Parameter(torch.from_numpy(layer.gamma.copy()))
        self.beta = nn.Parameter(torch.from_numpy(layer.beta.copy()))
        self.activation = layer.activation
        self.apply_activation_flag = apply_activation_flag

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        active = self.nb_group - self.set_off
        if active > 0:
            split = active * self.group_size
            head = x[:, :split]
            weight = self.gamma[:active].repeat_interleave(self.group_size)
            bias = self.beta[:active].repeat_interleave(self.group_size)
            normed = F.group_norm(head.float(), active, weight.float(), bias.float(), NORM_EPSILON).to(x.dtype)
            x = normed if split == x.shape[1] else torch.cat([normed, x[:, split:]], dim=1)
        if self.apply_activation_flag:
            x = apply_activation(x, self.activation)
        return x


class CiannaDense(nn.Module):
    """Dense layer over ``[flattened input, b]`` with CIANNA's extra "bias neuron" output column.

    Returns ``[N, nb_neurons + 1]``; the last column is the bias neuron (kept after LIN, zero
    after RELU, LOGI and SMAX), which a following dense layer uses as its bias input.
    """

    def __init__(self, layer: DenseLayer, in_features: int, bias_source: str, bias_value: float) -> None:
        super().__init__()
        if layer.weights.shape != (in_features + 1, layer.nb_neurons + 1):
            raise ValueError(
                f"weights have shape {layer.weights.shape}, expected ({in_features + 1}, {layer.nb_neurons + 1})"
            )
        self.matrix = nn.Parameter(torch.from_numpy(layer.weights.copy()))
        self.bias_source = bias_source  # "constant" or "previous" (the previous dense bias neuron)
        self.bias_value = float(bias_value)
        self.dropout = float(layer.dropout)
        self.activation = layer.activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bias_source == "previous":
            flat, b = x[:, :-1], x[:, -1:]
        else:
            flat = x.reshape(x.shape[0], -1)
            b = torch.full((x.shape[0], 1), self.bias_value, dtype=x.dtype, device=x.device)
        y = torch.cat([flat, b], dim=1) @ self.matrix.to(x.dtype)
        outputs, neuron = y[:, :-1], y[:, -1:]
        if self.dropout:
            outputs = outputs * (1.0 - self.dropout)
        kind = self.activation.kind
        if kind == "SMAX":
            outputs = torch.softmax(outputs.float(), dim=1).to(x.dtype)
        elif kind in ("RELU", "LOGI"):
            outputs = apply_activation(outputs, self.activation)
        elif kind != "LIN":
            raise ValueError(f"activation {kind} is not valid on a dense layer")
        if kind != "LIN":
            neuron = torch.zeros_like(neuron)
        return torch.cat([outputs, neuron], dim=1)


class YoloActivation(nn.Module):
    """CIANNA's YOLO head activation: logistic/linear clamps per channel kind, from the slope table."""

    def __init__(self, head: YoloHead) -> None:
        super().__init__()
        self.head = head
        per_box = head.channels_per_box
        kinds = []  # per channel: (mode, slope row) with mode logistic/linear/constant
        for _ in range(head.nb_box):
            for d in range(3):
                kinds.append(("logistic", 0) if d < head.fit_dim else ("half", 0))
            for d in range(3):
                kinds.append(("linear", 1) if d < head.fit_dim else ("zero", 1))
            kinds.append(("logistic", 2))
            kinds.append(("logistic", 3))
            kinds.extend([("softmax" if head.class_softmax else "logistic", 4)] * head.nb_class)
            kinds.extend([("linear", 5)] * head.nb_param)
        assert len(kinds) == head.nb_box * per_box
        slopes = torch.as_tensor(head.slopes, dtype=torch.float32)
        rows = torch.tensor([row for _, row in kinds])
        self.register_buffer("slope", slopes[rows, 0], persistent=False)
        self.register_buffer("fmax", slopes[rows, 1], persistent=False)
        self.register_buffer("fmin", slopes[rows, 2], persistent=False)
        self.register_buffer("mask_logistic", torch.tensor([m == "logistic" for m, _ in kinds]), persistent=False)
        self.register_buffer("mask_linear", torch.tensor([m == "linear" for m, _ in kinds]), persistent=False)
        self.register_buffer("mask_half", torch.tensor([m == "half" for m, _ in kinds]), persistent=False)
        self.register_buffer("mask_zero", torch.tensor([m == "zero" for m, _ in kinds]), persistent=False)
        self.class_softmax = bool(head.class_softmax and head.nb_class)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        slope, fmax, fmin = (t.view(shape).to(torch.float32) for t in (self.slope, self.fmax, self.fmin))
        xf = x.float()
        logistic = 1.0 / (1.0 + torch.exp(torch.clamp(-slope * xf, min=fmin, max=fmax)))
        linear = torch.clamp(slope * xf, min=fmin, max=fmax)
        out = torch.where(self.mask_logistic.view(shape), logistic, linear)
        out = torch.where(self.mask_half.view(shape), torch.full_like(out, 0.5), out)
        out = torch.where(self.mask_zero.view(shape), torch.zeros_like(out), out)
        if self.class_softmax:
            head = self.head
            per_box = head.channels_per_box
            boxes = out.reshape(out.shape[0], head.nb_box, per_box, *out.shape[2:])
            classes = torch.softmax(boxes[:, :, 8 : 8 + head.nb_class], dim=2)
            boxes = torch.cat([boxes[:, :, :8], classes, boxes[:, :, 8 + head.nb_class :]], dim=2)
            out = boxes.reshape(out.shape)
        return out.to(x.dtype)


_PRIORS: dict[tuple[int, str], tuple[YoloHead, torch.Tensor]] = {}


def _priors_on(head: YoloHead, device: torch.device) -> torch.Tensor:
    """The head's priors as a tensor on `device`, copied once: a host-to-device copy per batch
    would block the CPU (and cannot be recorded in a CUDA graph)."""
    key = (id(head), str(device))
    cached = _PRIORS.get(key)
    if cached is None or cached[0] is not head:
        cached = (head, torch.as_tensor(np.asarray(head.priors), dtype=torch.float32).to(device))
        if len(_PRIORS) > 64:
            _PRIORS.clear()
        _PRIORS[key] = cached
    return cached[1]


def decode_yolo(activated: torch.Tensor, head: YoloHead, in_size: tuple[int, int, int]) -> torch.Tensor:
    """Decode an activated YOLO tensor into box corners in input pixels (CIANNA's raw_output=0).

    `in_size` is the network input (W, H, D). Returns float32 in the same layout.
    """
    x = activated.float()
    spatial = x.shape[2:]
    if len(spatial) == 2:
        x = x.unsqueeze(2)  # [N, C, 1, H, W]
    n, _, nd, nh, nw = x.shape
    per_box = head.channels_per_box
    boxes = x.reshape(n, head.nb_box, per_box, nd, nh, nw).clone()
    grid_counts = (nw, nh, nd)
    cell = [in_size[d] // grid_counts[d] for d in range(3)]
    priors = _priors_on(head, x.device)  # [3, nb_box]
    axes_shape = [(1, 1, nw), (1, nh, 1), (nd, 1, 1)]
    centres, halves = [], []
    for d in range(3):
        index = torch.arange(grid_counts[d], device=x.device, dtype=torch.float32).reshape(axes_shape[d])
        centre = index * cell[d] + boxes[:, :, d] * cell[d]
        half = 0.5 * priors[d].reshape(1, head.nb_box, 1, 1, 1) * torch.exp(boxes[:, :, 3 + d])
        centres.append(centre)
        halves.append(half)
    for d in range(3):
        boxes[:, :, d] = centres[d] - halves[d]
        boxes[:, :, 3 + d] = centres[d] + halves[d]
    out = boxes.reshape(n, head.nb_box * per_box, nd, nh, nw)
    return out[:, :, 0] if len(spatial) == 2 else out
