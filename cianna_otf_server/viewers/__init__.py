"""Glue between desktop image viewers and the detection service, without the command line.

A viewer hands over what its user looked at (an image file, a drawn region) in its own words;
these modules turn that into job parameters and turn the service's results back into something
the viewer loads, so that the command line (`cianna_otf_server.cli.ds9`) stays a thin shell:

* `cianna_otf_server.viewers._ds9`: SAOImage DS9, through its Analysis menu (an analysis file
  whose entries run ``cianna-otf ds9-run``), DS9 region text -> SODA regions, XPA or SAMP to
  load the detections back.
"""

from __future__ import annotations

from ._ds9 import (
    ANALYSIS_FILE_NAME,
    RESULT_TAG,
    AnalysisEntry,
    Ds9Shape,
    analysis_file_text,
    Ds9LinkError,
    choose_region,
    count_shapes,
    ds9_to_soda,
    image_reference,
    load_regions,
    parse_analysis_file,
    parse_ds9_regions,
    read_regions,
    shape_to_soda,
    tag_regions,
    xpa_available,
)

__all__ = [
    "ANALYSIS_FILE_NAME",
    "AnalysisEntry",
    "Ds9LinkError",
    "Ds9Shape",
    "RESULT_TAG",
    "analysis_file_text",
    "choose_region",
    "count_shapes",
    "ds9_to_soda",
    "image_reference",
    "load_regions",
    "parse_analysis_file",
    "parse_ds9_regions",
    "read_regions",
    "shape_to_soda",
    "tag_regions",
    "xpa_available",
]
