"""Read, run and write networks saved by the CIANNA framework, with PyTorch.

`load_network` reads CIANNA's binary or ASCII model files and returns a module whose forward
pass reproduces CIANNA's numbers and output layout; `save_network` writes CIANNA's binary format.
A fully convolutional network runs at another input size than the stored one, as in CIANNA:
`input_size_problem` says whether a size fits, `CiannaNetwork.with_input_size` (or
``load_network(..., input_size=...)``) runs it there.
"""

from ._input_size import input_size_problem, spec_at_input_size
from ._layers import decode_yolo
from ._network import CiannaNetwork, load_network, read_model_file, save_network
from ._spec import (
    Activation,
    ConvLayer,
    DenseLayer,
    LayerShape,
    NetworkSpec,
    NormLayer,
    PoolLayer,
    YoloHead,
    compute_shapes,
)

__all__ = [
    "Activation",
    "CiannaNetwork",
    "ConvLayer",
    "DenseLayer",
    "LayerShape",
    "NetworkSpec",
    "NormLayer",
    "PoolLayer",
    "YoloHead",
    "compute_shapes",
    "decode_yolo",
    "input_size_problem",
    "load_network",
    "read_model_file",
    "save_network",
    "spec_at_input_size",
]
