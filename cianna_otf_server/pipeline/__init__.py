"""The detection pipeline: FITS image -> region -> patches -> network -> boxes -> catalogue.

The pipeline knows nothing about jobs or HTTP. `detect` runs everything for one image; the
steps are public so that a scheduler can batch the forward pass of many jobs together.
"""

from ._boxes import Boxes, diou, diou_matrix
from ._catalogue import CORE_COLUMNS, classic_catalogue, make_catalogue, parameter_values, yolo_catalogue
from ._decode import DecodeSettings, decode_batch, decode_patch, decode_settings, first_nms
from ._detect import (YoloDetection, check_network, detect, prepare_network, resolve_precision, run_detection,
                      run_network)
from ._image import SkyImage, open_image
from ._merge import drop_edge_boxes, keep_in_region, merge_tiles, second_nms, to_image_coordinates
from ._normalise import normalise, normalise_tensor, normalised_blank
from ._region import PixelBox, full_box, parse_pixels, parse_region
from ._tiling import Tile, TilePlan, cut_patch, cut_raw_patch, iter_batches, plan_tiles

__all__ = [
    "Boxes",
    "CORE_COLUMNS",
    "DecodeSettings",
    "PixelBox",
    "SkyImage",
    "Tile",
    "YoloDetection",
    "TilePlan",
    "check_network",
    "classic_catalogue",
    "cut_patch",
    "cut_raw_patch",
    "decode_batch",
    "decode_patch",
    "decode_settings",
    "detect",
    "diou",
    "diou_matrix",
    "drop_edge_boxes",
    "first_nms",
    "full_box",
    "iter_batches",
    "keep_in_region",
    "make_catalogue",
    "merge_tiles",
    "normalise",
    "normalise_tensor",
    "normalised_blank",
    "open_image",
    "parameter_values",
    "parse_pixels",
    "parse_region",
    "plan_tiles",
    "prepare_network",
    "resolve_precision",
    "run_detection",
    "run_network",
    "second_nms",
    "to_image_coordinates",
    "yolo_catalogue",
]
