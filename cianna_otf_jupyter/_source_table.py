"""The detection widget's source list: a table with sortable columns, its selection shared with the view.

A plain `ipywidgets.Select` of fixed-width text lines cannot sort, loses its columns in a
proportional font and shows units nowhere. This is a small anywidget (its front end is the
module below, shipped inline: nothing is fetched) holding the formatted cells, the column names
and units, and three traits the browser and the kernel share:

* ``value``: the table row (index into the catalogue) chosen, or None. Choosing a row in the
  browser sets it (the widget then centres the view on that source); a source clicked in the
  view sets it from the kernel (the row is highlighted and scrolled into sight);
* ``sort_by`` / ``descending``: a click on a column header sets them; the kernel sorts the
  catalogue's own values (numbers as numbers, empty cells last) into ``order``, the rows'
  display order, so sorting never depends on the text of a formatted cell.
"""

from __future__ import annotations

from typing import Any, Sequence

import anywidget
import numpy as np
import traitlets

__all__ = ["SourceTable"]

_ESM = """
function render({ model, el }) {
  const box = document.createElement("div");
  box.className = "cianna-otf-table";
  box.style.maxHeight = "16em";
  box.style.overflow = "auto";
  box.style.border = "1px solid var(--jp-border-color2, #ccc)";
  const table = document.createElement("table");
  table.style.borderCollapse = "collapse";
  table.style.width = "100%";
  table.style.fontVariantNumeric = "tabular-nums";
  box.appendChild(table);
  el.appendChild(box);

  function draw() {
    const columns = model.get("columns"), cells = model.get("cells"), order = model.get("order");
    const sortBy = model.get("sort_by"), descending = model.get("descending"), chosen = model.get("value");
    table.replaceChildren();
    const head = table.createTHead().insertRow();
    columns.forEach((column) => {
      const th = document.createElement("th");
      const arrow = column.name === sortBy ? (descending ? " \\u25BC" : " \\u25B2") : "";
      th.textContent = column.name + (column.unit ? " [" + column.unit + "]" : "") + arrow;
      th.title = "Sort by " + column.name;
      th.dataset.column = column.name;
      th.style.cssText = "position: sticky; top: 0; cursor: pointer; text-align: right; padding: 2px 6px;" +
        "background: var(--jp-layout-color2, #eee); white-space: nowrap;";
      th.addEventListener("click", () => {
        model.set("descending", column.name === sortBy ? !descending : false);
        model.set("sort_by", column.name);
        model.save_changes();
      });
      head.appendChild(th);
    });
    const body = table.createTBody();
    order.forEach((index) => {
      const tr = body.insertRow();
      tr.dataset.row = String(index);
      tr.style.cursor = "pointer";
      if (index === chosen) {
        tr.className = "cianna-otf-chosen";
        tr.style.background = "var(--jp-brand-color3, #cde)";
      }
      cells[index].forEach((text) => {
        const td = tr.insertCell();
        td.textContent = text;
        td.style.cssText = "text-align: right; padding: 1px 6px; white-space: nowrap;";
      });
      tr.addEventListener("click", () => {
        model.set("value", index);
        model.save_changes();
      });
    });
    const row = body.querySelector(".cianna-otf-chosen");
    if (row) row.scrollIntoView({ block: "nearest" });
  }
  for (const name of ["columns", "cells", "order", "sort_by", "descending", "value"]) {
    model.on("change:" + name, draw);
  }
  draw();
}
export default { render };
"""


class SourceTable(anywidget.AnyWidget):
    """Sources as a sortable table; ``value`` is the chosen catalogue row (None: none)."""

    _esm = _ESM
    columns = traitlets.List(traitlets.Dict()).tag(sync=True)  # [{"name": ..., "unit": ...}]
    cells = traitlets.List(traitlets.List(traitlets.Unicode())).tag(sync=True)  # per catalogue row
    order = traitlets.List(traitlets.Int()).tag(sync=True)  # catalogue rows in display order
    sort_by = traitlets.Unicode("").tag(sync=True)
    descending = traitlets.Bool(False).tag(sync=True)
    value = traitlets.Int(None, allow_none=True).tag(sync=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._keys: dict[str, np.ndarray] = {}
        self.observe(lambda _: self._sort(), names=["sort_by", "descending"])

    @property
    def options(self) -> list[int]:
        """The listed catalogue rows, in display order."""
        return list(self.order)

    def show(self, columns: Sequence[tuple[str, str]], cells: list[list[str]],
             keys: dict[str, np.ndarray]) -> None:
        """List rows: column (name, unit) pairs, each row's formatted cells and each column's values to sort by.

        ``keys[name]`` holds the column's values for every listed row (numbers, or text); NaN and
        masked values sort last whichever the direction.
        """
        self._keys = {name: np.asarray(values) for name, values in keys.items()}
        with self.hold_sync():
            self.value = None
            self.columns = [{"name": name, "unit": unit} for name, unit in columns]
            self.cells = cells
            self.order = list(range(len(cells)))
            if self.sort_by:
                self._sort()

    def _sort(self) -> None:
        values = self._keys.get(self.sort_by)
        if values is None or len(values) != len(self.cells):
            self.order = list(range(len(self.cells)))
            return
        if values.dtype.kind in "fiu":
            numbers = values.astype(np.float64)
            empty = ~np.isfinite(numbers)
            numbers = np.where(empty, 0.0, numbers)
            ranked = np.lexsort((np.arange(len(numbers)), -numbers if self.descending else numbers, empty))
        else:
            text = values.astype(str)
            ranked = np.array(sorted(range(len(text)), key=lambda i: text[i], reverse=self.descending), dtype=int)
        self.order = [int(i) for i in ranked]
