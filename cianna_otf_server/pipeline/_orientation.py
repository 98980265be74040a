"""How an image's pixel grid sits on the sky: north direction, parity, angles, pixel scale.

Position angles in catalogues are measured east of ICRS north, but detections are measured in
the pixel frame. The link between the two depends on the whole WCS: CDELT signs, CD or PC
matrices, CROTA2, the celestial frame (Galactic north is about 60 degrees away from ICRS north)
and the projection (away from the reference pixel, north turns across a SIN or NCP image). So
nothing here reads header keywords: every answer is measured numerically through the WCS, by
stepping half a pixel east and north of a position in ICRS (or another frame, e.g. the image's
own, in which headers give a beam's BPA) with `astropy.coordinates.SkyCoord`, and projecting the
steps back to pixels with `WCS.world_to_pixel`. Every projection and frame that
astropy understands then works, position by position.

Conventions
-----------
* Pixel positions are 0-based (numpy and astropy ``origin=0``), ``x`` along the first FITS axis.
* A pixel-frame angle is measured from +y towards -x: for the usual FITS orientation (north up,
  east left) it equals the position angle on the sky.
* Angles of axes (beam or source major axes) are 180-degree periodic and returned in [-90, 90).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from astropy import units as u
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales

__all__ = [
    "east_is_left",
    "north_angle",
    "pixel_angle",
    "pixel_scales_arcsec",
    "pixel_to_sky_matrix",
    "sky_position_angle",
    "sky_to_pixel_matrix",
    "wcs_problem",
]


def sky_to_pixel_matrix(wcs: WCS, x: float | np.ndarray, y: float | np.ndarray, *,
                        frame: str = "icrs") -> np.ndarray:
    """Local linear map from small sky offsets to pixel offsets at 0-based pixel ``(x, y)``.

    Parameters
    ----------
    wcs : astropy.wcs.WCS
        A WCS with a celestial part (extra axes are dropped).
    x, y : float or array
        0-based pixel positions (broadcast together).
    frame : str
        Whose north and east: "icrs" (default), any astropy frame name ("fk5", "galactic"), or
        "native" for the WCS's own celestial frame (the frame in which headers give BPA).

    Returns
    -------
    numpy.ndarray
        Shape ``broadcast(x, y).shape + (2, 2)``: column 0 holds the pixel offset ``(dx, dy)`` of
        one degree towards east, column 1 of one degree towards north. NaN where the position is
        off the projection (or at a pole, where north is undefined).
    """
    wcs = _celestial(wcs)
    x, y = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    step = 0.5 * float(np.min(proj_plane_pixel_scales(wcs)))  # degrees: half a pixel
    if frame == "native":
        return _native_sky_to_pixel(wcs, x, y, step)
    centre = wcs.pixel_to_world(x, y)
    if frame != "native":
        centre = centre.transform_to(frame)
    columns = []
    for towards in (90.0, 0.0):  # east, then north
        ahead = centre.directional_offset_by(towards * u.deg, step * u.deg)
        behind = centre.directional_offset_by((towards + 180.0) * u.deg, step * u.deg)
        xa, ya = wcs.world_to_pixel(ahead)
        xb, yb = wcs.world_to_pixel(behind)  # central difference: curvature cancels
        columns.append(np.stack([np.asarray(xa) - xb, np.asarray(ya) - yb], axis=-1) / (2.0 * step))
    return np.stack(columns, axis=-1)


def _native_sky_to_pixel(wcs: WCS, x: np.ndarray, y: np.ndarray, step: float) -> np.ndarray:
    """`sky_to_pixel_matrix` in the WCS's own frame, with the WCS's own transforms and spherical
    trigonometry instead of `SkyCoord`: the same steps, a hundred times cheaper (every job asks
    it for the beam on its image)."""
    lng, lat = wcs.wcs.lng, wcs.wcs.lat
    world = wcs.all_pix2world(np.stack([x.ravel(), y.ravel()], axis=-1), 0)
    lon, la = np.radians(world[:, lng]), np.radians(world[:, lat])
    r = math.radians(step)
    columns = []
    for towards in (90.0, 0.0):  # east, then north: position angles from north through east
        ends = []
        for pa in (math.radians(towards), math.radians(towards + 180.0)):
            lat2 = np.arcsin(np.sin(la) * math.cos(r) + np.cos(la) * math.sin(r) * math.cos(pa))
            lon2 = lon + np.arctan2(math.sin(pa) * math.sin(r) * np.cos(la), math.cos(r) - np.sin(la) * np.sin(lat2))
            points = np.empty((len(lon), 2))
            points[:, lng], points[:, lat] = np.degrees(lon2), np.degrees(lat2)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # off the projection: NaN, as SkyCoord gives
                ends.append(wcs.all_world2pix(points, 0))
        ahead, behind = ends  # central difference: curvature cancels
        columns.append((ahead - behind) / (2.0 * step))
    return np.stack(columns, axis=-1).reshape(x.shape + (2, 2))


def pixel_to_sky_matrix(wcs: WCS, x: float | np.ndarray, y: float | np.ndarray, *,
                        frame: str = "icrs") -> np.ndarray:
    """Inverse of `sky_to_pixel_matrix`: degrees east (row 0) and north (row 1) per pixel offset."""
    m = sky_to_pixel_matrix(wcs, x, y, frame=frame)
    a, b, c, d = m[..., 0, 0], m[..., 0, 1], m[..., 1, 0], m[..., 1, 1]
    det = a * d - b * c
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.stack([np.stack([d, -b], axis=-1), np.stack([-c, a], axis=-1)], axis=-2) / det[..., None, None]


def north_angle(wcs: WCS, x: float | np.ndarray, y: float | np.ndarray) -> np.ndarray:
    """Direction of ICRS north in the pixel frame, degrees from +y towards -x, in (-180, 180].

    0 for a north-up image, 30 when north points 30 degrees to the left of +y. Galactic-frame
    images are answered for ICRS north, not Galactic north.
    """
    matrix = sky_to_pixel_matrix(wcs, x, y)
    dx, dy = matrix[..., 0, 1], matrix[..., 1, 1]
    return np.degrees(np.arctan2(-dx, dy))


def east_is_left(wcs: WCS) -> bool:
    """True for the usual sky parity: east towards -x when north is towards +y.

    Measured at the reference pixel (at a nearby pixel if north is undefined there, as for a
    map centred on a pole). A mirrored image (e.g. CDELT1 > 0 with CDELT2 > 0) gives False.
    """
    wcs = _celestial(wcs)
    x0, y0 = (float(v) - 1.0 for v in wcs.wcs.crpix)
    for dx, dy in ((0.0, 0.0), (7.0, 11.0), (-13.0, 5.0)):
        det = float(np.linalg.det(sky_to_pixel_matrix(wcs, x0 + dx, y0 + dy)))
        if np.isfinite(det) and det != 0.0:
            return det < 0.0
    raise ValueError("the WCS gives no sky orientation near its reference pixel")


def sky_position_angle(pixel_angle_deg: float | np.ndarray, wcs: WCS, x: float | np.ndarray,
                       y: float | np.ndarray) -> np.ndarray:
    """Turn an axis direction in the pixel frame into a position angle east of ICRS north.

    Parameters
    ----------
    pixel_angle_deg : float or array
        Angle of the axis in the pixel frame, degrees from +y towards -x.
    wcs : astropy.wcs.WCS
        The image's WCS.
    x, y : float or array
        0-based pixel positions where the axes lie (the orientation varies across an image).

    Returns
    -------
    numpy.ndarray
        Position angles, degrees east of ICRS north, in [-90, 90) (axes are 180-degree periodic).
    """
    a = np.radians(np.asarray(pixel_angle_deg, dtype=np.float64))
    pixel = np.stack(np.broadcast_arrays(-np.sin(a), np.cos(a)), axis=-1)
    sky = np.einsum("...ij,...j->...i", pixel_to_sky_matrix(wcs, x, y), pixel)  # (east, north)
    return _axis_angle(np.degrees(np.arctan2(sky[..., 0], sky[..., 1])))


def pixel_angle(sky_pa_deg: float | np.ndarray, wcs: WCS, x: float | np.ndarray,
                y: float | np.ndarray) -> np.ndarray:
    """Turn a position angle east of ICRS north into an axis angle in the pixel frame.

    The inverse of `sky_position_angle`: degrees from +y towards -x, in [-90, 90).
    """
    pa = np.radians(np.asarray(sky_pa_deg, dtype=np.float64))
    sky = np.stack(np.broadcast_arrays(np.sin(pa), np.cos(pa)), axis=-1)
    matrix = sky_to_pixel_matrix(wcs, x, y)
    pixel = np.einsum("...ij,...j->...i", matrix, sky)
    return _axis_angle(np.degrees(np.arctan2(-pixel[..., 0], pixel[..., 1])))


def pixel_scales_arcsec(wcs: WCS) -> tuple[float, float]:
    """Pixel sides along x and y, arcsec, in the projection plane at the reference point."""
    scales = proj_plane_pixel_scales(_celestial(wcs)) * 3600.0
    return (float(scales[0]), float(scales[1]))


def wcs_problem(wcs: WCS, nx: int, ny: int) -> str | None:
    """Why a celestial WCS cannot place an ``nx`` x ``ny`` image on the sky; None when it can.

    WCSLIB accepts some headers whose numbers make no sky: a CD matrix of rank one gives every
    pixel a position, but no pixel back from a position, so positions, position angles and sky
    regions would all come out as NaN or as plausible-looking nonsense. The WCS is usable when
    its pixel-to-sky matrix is regular and a pixel at the image centre (or, for an image far
    from its reference point, at the reference pixel) goes to a sky position and back to itself.
    """
    try:
        matrix = np.asarray(wcs.pixel_scale_matrix, dtype=np.float64)
    except Exception as exc:  # noqa: BLE001 - WCSLIB refuses in many ways
        return f"its pixel-to-sky matrix cannot be formed ({exc})"
    scale = float(np.max(np.abs(matrix))) if matrix.size and np.isfinite(matrix).all() else math.nan
    if not math.isfinite(scale) or scale == 0 or abs(float(np.linalg.det(matrix))) <= 1e-12 * scale * scale:
        return "its pixel-to-sky matrix (CDELT with PC, or CD) is singular"
    lat = int(wcs.wcs.lat)
    for x, y in (((nx - 1) / 2.0, (ny - 1) / 2.0), tuple(float(v) - 1.0 for v in wcs.wcs.crpix[:2])):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                world = np.asarray(wcs.all_pix2world([[x, y]], 0), dtype=np.float64)[0]
                back = np.asarray(wcs.all_world2pix([world], 0), dtype=np.float64)[0]
        except Exception:  # noqa: BLE001 - no solution here: try the other point
            continue
        if (np.isfinite(world).all() and np.isfinite(back).all() and abs(world[lat]) <= 90.0
                and math.hypot(back[0] - x, back[1] - y) < 0.01):
            return None
    return "it gives no sky position at the image centre"


def _celestial(wcs: WCS) -> WCS:
    if wcs.naxis != 2:
        wcs = wcs.celestial
    if wcs.naxis != 2 or not wcs.has_celestial:
        raise ValueError("the WCS has no celestial (longitude, latitude) axes")
    return wcs


def _axis_angle(angle: np.ndarray) -> np.ndarray:
    """Wrap a 180-degree-periodic angle into [-90, 90)."""
    return np.mod(np.asarray(angle) + 90.0, 180.0) - 90.0
