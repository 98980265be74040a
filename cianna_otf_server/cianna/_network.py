"""A CIANNA network as a PyTorch module: load, run (CPU/GPU, fp32/fp16/bf16) and save.

The numbers reproduce CIANNA's forward pass (see the golden vectors), the output layout is
CIANNA's forward file layout, and the parameters stay in CIANNA's own form so that a network
(trained or loaded here) is written back as a file CIANNA itself can load.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from ..errors import ModelFileError, UserInputError
from ._ascii import read_ascii, write_ascii
from ._binary import read_binary, write_binary
from ._input_size import input_size_problem, resolve_input_size, spec_at_input_size
from ._layers import CiannaConv, CiannaDense, CiannaGroupNorm, CiannaPool, decode_yolo
from ._spec import ConvLayer, DenseLayer, NetworkSpec, NormLayer, PoolLayer, YoloHead, compute_shapes

log = logging.getLogger(__name__)

NormActivation = Literal["cuda", "cpu"]
DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _looks_ascii(head: bytes) -> bool:
    first_line = head.split(b"\n", 1)[0].strip()
    parts = first_line.split(b"x")
    return len(parts) == 4 and all(p.isdigit() for p in parts)


def read_model_file(path: str | Path) -> NetworkSpec:
    """Read a CIANNA model file (binary, or ASCII detected from its first line) into a spec.

    Raises `ModelFileError` naming the file and the byte offset (binary) or line (ASCII).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read model file ({exc.strerror})") from exc
    if _looks_ascii(data[:64]):
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError:
            raise ModelFileError(f"{path}: ASCII model holds non-ASCII bytes") from None
        spec = read_ascii(text, str(path))
    else:
        spec = read_binary(data, str(path))
    spec.source = path
    return spec


class CiannaNetwork(nn.Module):
    """A CIANNA network runnable by PyTorch.

    Parameters
    ----------
    spec : NetworkSpec
        The layers as read from a CIANNA file.
    input_bias : float
        CIANNA's ``init(bias=...)``: the value appended to the input of a first dense layer.
    norm_activation : {"cuda", "cpu"}
        "cuda" (default) applies group-norm activations as CUDA CIANNA does, which is how models
        are trained; "cpu" skips them, reproducing CPU CIANNA builds.

    Attributes
    ----------
    in_dims : (W, H, D, C)
        The input the network runs on (see `with_input_size`).
    stored_in_dims : (W, H, D, C)
        The input size saved in the model file (the training size); equal to ``in_dims`` unless
        the network runs at another size.
    """

    def __init__(
        self,
        spec: NetworkSpec,
        input_bias: float = 0.1,
        norm_activation: NormActivation = "cuda",
        *,
        _share: "CiannaNetwork | None" = None,
    ) -> None:
        super().__init__()
        if norm_activation not in ("cuda", "cpu"):
            raise ValueError("norm_activation must be 'cuda' or 'cpu'")
        self.in_dims: tuple[int, int, int, int] = tuple(int(v) for v in spec.in_dims)
        self.stored_in_dims: tuple[int, int, int, int] = (
            _share.stored_in_dims if _share is not None else self.in_dims
        )
        self.input_bias = float(input_bias)
        self.norm_activation = norm_activation
        self.source = spec.source
        self.spatial_dims = 3 if self.in_dims[2] > 1 or any(
            isinstance(layer, ConvLayer) and layer.f_size[2] > 1 for layer in spec.layers
        ) else 2
        if _share is not None and _share.spatial_dims != self.spatial_dims:
            raise ValueError("a network cannot change between 2-D and 3-D with its input size")
        self._spec_template = spec
        self.shapes = compute_shapes(spec)
        self.layers = nn.ModuleList(self._build(spec, _share))
        self.precision = "fp32" if _share is None else _share.precision
        self.dtype = torch.float32 if _share is None else _share.dtype
        self.memory_format = torch.contiguous_format if _share is None else _share.memory_format

    def _build(self, spec: NetworkSpec, share: "CiannaNetwork | None" = None) -> list[nn.Module]:
        """PyTorch modules for the layers; with `share`, its conv and norm modules are reused as they are."""
        modules: list[nn.Module] = []
        width, height, depth, channels = self.in_dims
        previous: object = None
        for index, layer in enumerate(spec.layers):
            try:
                if isinstance(previous, DenseLayer) and not isinstance(layer, DenseLayer):
                    raise ValueError("only dense layers may follow a dense layer")
                if share is not None and isinstance(layer, (ConvLayer, NormLayer)):
                    modules.append(share.layers[index])  # same parameters, kernels and caches
                elif isinstance(layer, ConvLayer):
                    modules.append(CiannaConv(layer, channels, self.spatial_dims, layer.bias_value))
                elif isinstance(layer, PoolLayer):
                    modules.append(CiannaPool(layer, self.spatial_dims, (width, height, depth)))
                elif isinstance(layer, NormLayer):
                    modules.append(CiannaGroupNorm(layer, channels, self.norm_activation == "cuda"))
                elif isinstance(layer, DenseLayer):
                    if previous is None:
                        source, bias = "constant", self.input_bias
                    elif isinstance(previous, DenseLayer):
                        source, bias = "previous", 0.0
                    else:
                        source, bias = "constant", layer.bias_value
                    flat = width * height * depth * channels
                    modules.append(CiannaDense(layer, flat, source, bias))
            except ValueError as exc:
                name = spec.source or "model"
                raise ModelFileError(f"{name}: layer {index} ({layer.type_code}): {exc}") from None
            shape = self.shapes[index]
            width, height, depth, channels = shape.width, shape.height, shape.depth, shape.channels
            previous = layer
        return modules

    # ------------------------------------------------------------------------------------
    @property
    def yolo(self) -> YoloHead | None:
        """The YOLO head of the last layer, or None."""
        last = self.layers[-1]
        return last.yolo.head if isinstance(last, CiannaConv) and last.yolo is not None else None

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def output_grid(self) -> tuple[int, int, int]:
        """(W, H, D) of the last layer's output map (the YOLO grid for a YOLO network)."""
        last = self.shapes[-1]
        return (last.width, last.height, last.depth)

    @property
    def input_size(self) -> tuple[int, int]:
        """(W, H) of the input the network runs on."""
        return (self.in_dims[0], self.in_dims[1])

    def input_size_problem(self, size: tuple[int, ...]) -> str | None:
        """Why the network cannot run on ``size`` = (W, H) or (W, H, D) inputs; None when it can.

        See `input_size_problem` (module level): a fully convolutional network runs at any size
        its strides tile exactly, keeping a YOLO head's grid cell; a dense layer fixes the size.
        """
        return input_size_problem(self, size)

    def check_input_size(self, size: tuple[int, ...]) -> tuple[int, int, int]:
        """The output grid (W, H, D) the network gives for ``size`` inputs, or `ModelFileError` why not.

        ``size`` is (W, H) or (W, H, D) pixels. For a YOLO head this is the grid of cells, e.g.
        (32, 32, 1) for the SDC1 network (16 px cells) at 512 x 512.
        """
        problem = self.input_size_problem(size)
        if problem is not None:
            raise ModelFileError(f"{self._name()}: {problem}.")
        wanted = resolve_input_size(self.in_dims, size)
        last = compute_shapes(spec_at_input_size(self._spec_template, wanted))[-1]
        return (last.width, last.height, last.depth)

    def with_input_size(self, size: tuple[int, ...]) -> "CiannaNetwork":
        """This network running on ``size`` = (W, H) or (W, H, D) inputs, as CIANNA runs a network
        initialised with another input size than the one saved in its file.

        Returns ``self`` when the size is already the network's. Otherwise a new network that
        shares this one's parameters (no copy: training one changes the other) and device,
        precision and memory format; its ``in_dims``, shapes, output grid, global pools and YOLO
        decoding follow the new size, and `save_network` writes the new input size. Raises
        `ModelFileError` naming the layer when the size does not fit (see `check_input_size`).
        """
        self.check_input_size(size)
        wanted = resolve_input_size(self.in_dims, size)
        if wanted == tuple(self.in_dims[:3]):
            return self
        spec = spec_at_input_size(self._spec_template, wanted)
        resized = CiannaNetwork(spec, input_bias=self.input_bias, norm_activation=self.norm_activation, _share=self)
        resized.train(self.training)
        return resized

    def _name(self) -> str:
        return str(self.source) if self.source else "network"

    def set_precision(self, precision: str) -> "CiannaNetwork":
        """Run in fp32, fp16 or bf16 (parameters are cast; norm statistics stay in fp32)."""
        if precision not in DTYPES:
            raise UserInputError(f"precision must be one of {sorted(DTYPES)}, not {precision!r}")
        self.precision = precision
        self.dtype = DTYPES[precision]
        self.to(self.dtype)
        return self

    def set_channels_last(self, enabled: bool = True) -> "CiannaNetwork":
        """Run 2-D convolutions channels-last (NHWC), the layout GPU tensor cores want.

        Kernels and inputs are laid out NHWC, so cuDNN keeps every activation map NHWC and needs
        no layout transposes; the logical shape of the output (``[N, C, H, W]``) is unchanged,
        only its strides differ. Parameters keep CIANNA's own layout, so saving is unaffected.
        A no-op for 3-D networks.
        """
        fmt = torch.channels_last if enabled and self.spatial_dims == 2 else torch.contiguous_format
        self.memory_format = fmt
        for module in self.layers:
            if isinstance(module, CiannaConv):
                module.set_memory_format(fmt)
        return self

    def forward_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """Run on a tensor already on the network's device; returns the activated output.

        A dense network returns ``[N, nb_neurons + 1]``; a conv/pool network ``[N, C, (D,) H, W]``.
        In fp32 the result is CIANNA's float32 computation; the weights' derived kernels are cached
        between calls when no gradient is wanted (see `CiannaConv`).
        """
        x = x.to(self.dtype)
        if self.memory_format is not torch.contiguous_format and x.dim() == 4:
            x = x.contiguous(memory_format=self.memory_format)
        for module in self.layers:
            x = module(x)
        return x

    def _check_input(self, x: np.ndarray) -> np.ndarray:
        w, h, d, c = self.in_dims
        expected = (c, h, w) if self.spatial_dims == 2 and d == 1 else (c, d, h, w)
        if x.ndim == len(expected) + 2 and self.spatial_dims == 2 and x.shape[2] == 1:
            x = x[:, :, 0]  # [N, C, 1, H, W] for a 2-D network
        if x.ndim != len(expected) + 1 or tuple(x.shape[1:]) != expected:
            name = self.source.name if self.source else "this network"
            layout = "[N, C, H, W]" if len(expected) == 3 else "[N, C, D, H, W]"
            raise UserInputError(
                f"{name} expects input {layout} = [N, {', '.join(map(str, expected))}], got {list(x.shape)}"
            )
        return x

    @torch.inference_mode()
    def forward(self, x: np.ndarray | torch.Tensor, raw_output: bool = True) -> np.ndarray:  # type: ignore[override]
        """Run CIANNA's forward pass on numpy input (or a tensor) and return float32 numpy in CIANNA's layout.

        For a YOLO head, ``raw_output=True`` gives the activated tensor and ``raw_output=False``
        the decoded form (box corners in input pixels), exactly like CIANNA's forward files.
        """
        if isinstance(x, torch.Tensor):  # patches made on the device stay there
            out = self.forward_tensor(self._check_input(x.detach()).to(self.device))
        else:
            x = self._check_input(np.asarray(x, dtype=np.float32))
            out = self.forward_tensor(torch.from_numpy(np.ascontiguousarray(x)).to(self.device))
        if not raw_output and self.yolo is not None:
            out = self.decode(out)
        return out.float().contiguous().cpu().numpy()  # C order even after a channels-last run

    def decode(self, activated: torch.Tensor) -> torch.Tensor:
        """Decode an activated YOLO output into box corners (input pixels), float32."""
        head = self.yolo
        if head is None:
            raise ValueError("this network has no YOLO head to decode")
        return decode_yolo(activated, head, self.in_dims[:3])

    # ------------------------------------------------------------------------------------
    def to_spec(self) -> NetworkSpec:
        """The network's current parameters as a spec, ready to be written as a CIANNA file."""
        spec = copy.deepcopy(self._spec_template)
        for layer, module in zip(spec.layers, self.layers):
            if isinstance(layer, ConvLayer):
                layer.weights = module.weight_rows.detach().float().cpu().numpy().copy()
            elif isinstance(layer, NormLayer):
                layer.gamma = module.gamma.detach().float().cpu().numpy().copy()
                layer.beta = module.beta.detach().float().cpu().numpy().copy()
            elif isinstance(layer, DenseLayer):
                layer.weights = module.matrix.detach().float().cpu().numpy().copy()
        shapes = [self.in_dims[:3]] + [(s.width, s.height, s.depth) for s in self.shapes[:-1]]
        depths = [self.in_dims[3]] + [s.channels for s in self.shapes[:-1]]
        for layer, size, depth in zip(spec.layers, shapes, depths):
            if isinstance(layer, ConvLayer):  # keep the informative input size consistent
                layer.prev_size, layer.prev_depth = tuple(size), depth
        return spec


def load_network(
    path: str | Path,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    input_bias: float = 0.1,
    norm_activation: NormActivation = "cuda",
    input_size: tuple[int, ...] | None = None,
) -> CiannaNetwork:
    """Load a CIANNA model file and return a ready-to-run network in inference mode.

    Parameters
    ----------
    path : path to a binary (``bin=1``) or ASCII (``bin=0``) CIANNA model file.
    device : "cpu", "cuda", "cuda:1", ...
    precision : "fp32", "fp16" or "bf16".
    input_bias : CIANNA's ``init(bias=...)``; only used when the first layer is dense.
    norm_activation : "cuda" (default, the trained behaviour) or "cpu" (CPU CIANNA builds).
    input_size : (W, H) or (W, H, D), optional
        Run the network on inputs of this size instead of the one stored in the file, like
        CIANNA's ``init(in_dim=...)`` with a file saved at another size (a fully convolutional
        network only; see `CiannaNetwork.with_input_size`). Raises `ModelFileError` naming the
        layer when the size does not fit. ``net.stored_in_dims`` keeps the file's size.
    """
    spec = read_model_file(path)
    stored = tuple(int(v) for v in spec.in_dims)
    if input_size is not None:
        problem = input_size_problem(spec, input_size)
        if problem is not None:
            raise ModelFileError(f"{path}: {problem}.")
        spec = spec_at_input_size(spec, input_size)
    net = CiannaNetwork(spec, input_bias=input_bias, norm_activation=norm_activation)
    net.stored_in_dims = stored  # type: ignore[assignment]
    net.eval()
    net.to(torch.device(device))
    net.set_precision(precision)
    return net


def save_network(net: CiannaNetwork | NetworkSpec, path: str | Path, binary: bool = True) -> None:
    """Write a network in CIANNA's binary format (or ASCII with ``binary=False``)."""
    spec = net.to_spec() if isinstance(net, CiannaNetwork) else net
    if binary:
        write_binary(spec, path)
    else:
        Path(path).write_text(write_ascii(spec), encoding="ascii")
