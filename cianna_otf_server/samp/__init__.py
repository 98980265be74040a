"""A SAMP bridge: desktop viewers (Aladin Desktop, DS9, TOPCAT) ask for detections, and get catalogues.

`SampBridge` registers with the running SAMP hub as ``cianna-otf`` and handles:

* ``image.load.fits`` (``url``, ``image-id``, ``name``): remembers the image (``file://`` or
  ``http(s)://``) and, unless told only to remember, detects on all of it;
* ``coord.pointAt.sky`` (``ra``, ``dec``): detects within a circle around the position, on the
  most recently sent image that covers it;
* ``cianna-otf.detect`` (``image-id`` or ``url``, ``region`` as SODA text, ``model``; all
  optional): a detection asked for explicitly, e.g. from a viewer's script.

Each detection is one job of the detection service, made through
`cianna_otf_server.client.Client`. Its VOTable is saved locally and broadcast with
``table.load.votable``; clients that take ``ds9.set`` also get ``regions load FILE``. A call is
replied to with the table's URL, or with ``samp.error`` and the reason.

The command line's ``cianna-otf samp`` runs one until Ctrl-C.
"""

from ._api import SAMP_ERROR, SAMP_OK, SampBridgeError, hub_lockfile, hub_params, samp_module
from ._bridge import ON_IMAGE_CHOICES, SampBridge
from ._images import Footprint, ImageMemory, RememberedImage, resolve_image
from ._messages import DETECT, DS9_SET, HANDLED_MTYPES, IMAGE_LOAD, POINT_AT, TABLE_LOAD, Request, parse_region
from ._output import Detection, default_out_dir

__all__ = [
    "DETECT",
    "DS9_SET",
    "Detection",
    "Footprint",
    "HANDLED_MTYPES",
    "IMAGE_LOAD",
    "ImageMemory",
    "ON_IMAGE_CHOICES",
    "POINT_AT",
    "RememberedImage",
    "Request",
    "SAMP_ERROR",
    "SAMP_OK",
    "SampBridge",
    "SampBridgeError",
    "TABLE_LOAD",
    "default_out_dir",
    "hub_lockfile",
    "hub_params",
    "parse_region",
    "resolve_image",
    "samp_module",
]
