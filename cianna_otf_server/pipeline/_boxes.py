"""A flat, column-oriented set of detection boxes shared by the decode, merge and catalogue steps.

Plain numpy arrays (one per quantity) keep every step vectorised and make batches of many
patches cheap to concatenate.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Sequence

import numpy as np

__all__ = ["Boxes", "diou", "diou_matrix", "diou_broadcast"]


@dataclass
class Boxes:
    """Detection boxes; corners in pixels of the patch (after decoding) or of the image (after merging).

    Corners follow CIANNA's convention: pixel ``k`` spans ``[k, k+1]``, so the 0-based numpy
    coordinate of a box centre is ``(x_min + x_max)/2 - 0.5``.

    Attributes
    ----------
    x_min, y_min, x_max, y_max : ndarray of float64, shape (n,)
    objectness, probability : ndarray of float64, shape (n,)
    classes : ndarray of float64, shape (n, nb_class)
    params : ndarray of float64, shape (n, nb_param)
        The head's extra outputs (normalised; `_catalogue` turns them into physical values).
    prior : ndarray of int, shape (n,)
        Index of the YOLO prior (anchor box) that predicted the box.
    cell : ndarray of int, shape (n,)
        Grid cell ``row * grid_w + col`` inside the patch.
    tile : ndarray of int, shape (n,)
        Index of the patch in its `TilePlan` (-1 before merging).
    """

    x_min: np.ndarray
    y_min: np.ndarray
    x_max: np.ndarray
    y_max: np.ndarray
    objectness: np.ndarray
    probability: np.ndarray
    classes: np.ndarray
    params: np.ndarray
    prior: np.ndarray
    cell: np.ndarray
    tile: np.ndarray

    def __len__(self) -> int:
        return int(self.x_min.shape[0])

    @classmethod
    def empty(cls, nb_class: int = 0, nb_param: int = 0) -> "Boxes":
        """No boxes, with the right number of class and parameter columns."""
        f = np.zeros(0, dtype=np.float64)
        i = np.zeros(0, dtype=np.int64)
        return cls(f, f, f, f, f, f, np.zeros((0, nb_class)), np.zeros((0, nb_param)), i, i, i)

    def take(self, index: np.ndarray) -> "Boxes":
        """The boxes selected by an integer or boolean index."""
        return Boxes(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @classmethod
    def concat(cls, parts: Sequence["Boxes"], nb_class: int = 0, nb_param: int = 0) -> "Boxes":
        """All boxes of ``parts`` in one set."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty(nb_class, nb_param)
        return Boxes(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)})

    def shifted(self, dx: np.ndarray | float, dy: np.ndarray | float) -> "Boxes":
        """A copy with the corners moved by ``(dx, dy)`` pixels (patch to image coordinates)."""
        out = self.take(slice(None))
        out.x_min, out.x_max = self.x_min + dx, self.x_max + dx
        out.y_min, out.y_max = self.y_min + dy, self.y_max + dy
        return out

    @property
    def corners(self) -> np.ndarray:
        """``[n, 4]`` array of (x_min, y_min, x_max, y_max)."""
        return np.stack([self.x_min, self.y_min, self.x_max, self.y_max], axis=1)

    @property
    def x_center(self) -> np.ndarray:
        """0-based numpy x of the box centre."""
        return 0.5 * (self.x_min + self.x_max) - 0.5

    @property
    def y_center(self) -> np.ndarray:
        """0-based numpy y of the box centre."""
        return 0.5 * (self.y_min + self.y_max) - 0.5

    @property
    def width(self) -> np.ndarray:
        """Box width (pixels)."""
        return self.x_max - self.x_min

    @property
    def height(self) -> np.ndarray:
        """Box height (pixels)."""
        return self.y_max - self.y_min


def diou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """DIoU-style overlap between every box of ``a`` [n, 4] and of ``b`` [m, 4], shape [n, m].

    ``IoU - d / D``, where d is the distance between the centres and D the diagonal of the
    smallest box enclosing both (CIANNA's SDC1 recipe uses the distance ratio itself, not its
    square as in the DIoU paper). Ranges over (-1, 1]; 1 for identical boxes, negative for
    separated ones.
    """
    a = np.asarray(a, dtype=np.float64)[:, None, :]
    b = np.asarray(b, dtype=np.float64)[None, :, :]
    return diou_broadcast(a, b, np)


def diou_broadcast(a: Any, b: Any, xp: Any) -> Any:
    """`diou_matrix`'s formula on corner arrays ``[..., 4]`` that broadcast against each other.

    ``xp`` is the array library (numpy, or torch for boxes decoded where the network ran), so
    the host and the device compute the overlap with the same expression.
    """
    inter_w = (xp.minimum(a[..., 2], b[..., 2]) - xp.maximum(a[..., 0], b[..., 0])).clip(min=0.0)
    inter_h = (xp.minimum(a[..., 3], b[..., 3]) - xp.maximum(a[..., 1], b[..., 1])).clip(min=0.0)
    inter = inter_w * inter_h
    area_a = abs(a[..., 2] - a[..., 0]) * abs(a[..., 3] - a[..., 1])
    area_b = abs(b[..., 2] - b[..., 0]) * abs(b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    enclose_w = xp.maximum(a[..., 2], b[..., 2]) - xp.minimum(a[..., 0], b[..., 0])
    enclose_h = xp.maximum(a[..., 3], b[..., 3]) - xp.minimum(a[..., 1], b[..., 1])
    dist = xp.hypot(0.5 * (a[..., 0] + a[..., 2] - b[..., 0] - b[..., 2]),
                    0.5 * (a[..., 1] + a[..., 3] - b[..., 1] - b[..., 3]))
    diag = xp.hypot(enclose_w, enclose_h)
    tiny = float(np.finfo(np.float64).tiny)
    return inter / union.clip(min=tiny) - dist / diag.clip(min=tiny)


def diou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """DIoU-style overlap of one box [4] with each of ``boxes`` [m, 4], shape [m]."""
    return diou_matrix(np.asarray(box, dtype=np.float64)[None, :], boxes)[0]
