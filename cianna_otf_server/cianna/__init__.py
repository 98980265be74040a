"""Read, run and write networks saved by the CIANNA framework, with PyTorch.

`load_network` reads CIANNA's binary or ASCII model files and returns a module whose forward
pass reproduces CIANNA's numbers and output layout; `save_network` writes CIANNA's binary format.
"""

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
    "load_network",
    "read_model_file",
    "save_network",
]
