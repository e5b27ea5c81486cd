"""Number formats and a small grid that renders as a terminal table, Markdown or HTML."""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

UNITS_NOTE = ("MACs are multiply-accumulates (the paper's \"GFLOPs\" are MACs); FLOPs = 2 x MACs. "
              "Feature maps in bytes, 1 MB = 10^6 B.")


def count(value: Optional[float]) -> str:
    """``4089184000`` -> ``'4.09 G'`` (decimal K, M, G, T); blank for None."""
    if value is None:
        return ""
    for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= factor:
            return f"{value / factor:.2f} {suffix}"
    return f"{value:g}"


def size(nbytes: Optional[int]) -> str:
    """``3211264`` -> ``'3.21 MB'``; blank for None."""
    if nbytes is None:
        return ""
    return f"{count(nbytes)}B" if nbytes >= 1000 else f"{nbytes} B"


def milliseconds(seconds: Optional[float]) -> str:
    """``0.01234`` -> ``'12.3'`` (milliseconds, three significant digits); blank for None."""
    return "" if seconds is None else f"{seconds * 1e3:.3g}"


def percent(ratio: Optional[float]) -> str:
    return "" if ratio is None else f"{ratio:.1%}"


def ratio(new: Optional[float], old: Optional[float]) -> Optional[float]:
    """``new / old``, or None where it is undefined."""
    if new is None or not old:
        return None
    return new / old


def shapes(values: Sequence[Tuple[int, ...]]) -> str:
    """``[(1, 32, 56, 56), (1, 32, 28, 28)]`` -> ``'1x32x56x56 + 1x32x28x28'``."""
    return " + ".join("x".join(str(d) for d in shape) for shape in values)


def alphas(alpha_in: Optional[float], alpha_out: Optional[float]) -> str:
    if alpha_in is None or alpha_out is None:
        return ""
    return f"{alpha_in:g}/{alpha_out:g}"


@dataclass
class Grid:
    """Rows of cells under ``headers``; columns named in ``numeric`` align right."""

    headers: List[str]
    rows: List[List[str]] = field(default_factory=list)
    numeric: Tuple[str, ...] = ()

    def text(self) -> str:
        widths = [max([len(h)] + [len(row[i]) for row in self.rows]) for i, h in enumerate(self.headers)]

        def line(cells: Sequence[str]) -> str:
            return "  ".join(cell.rjust(w) if h in self.numeric else cell.ljust(w)
                             for cell, w, h in zip(cells, widths, self.headers)).rstrip()

        rule = "  ".join("-" * w for w in widths)
        return "\n".join([line(self.headers), rule] + [line(row) for row in self.rows])

    def markdown(self) -> str:
        def line(cells: Sequence[str]) -> str:
            return "| " + " | ".join(_keep_indent(c.replace("|", "\\|")) for c in cells) + " |"

        marks = ["---:" if h in self.numeric else "---" for h in self.headers]
        return "\n".join([line(self.headers), "|" + "|".join(marks) + "|"] + [line(row) for row in self.rows])

    def html(self) -> str:
        def cells(tag: str, row: Sequence[str]) -> str:
            return "".join(f"<{tag} style=\"text-align:{'right' if h in self.numeric else 'left'}\">"
                           f"{_keep_indent(html.escape(c))}</{tag}>" for c, h in zip(row, self.headers))

        body = "".join(f"<tr>{cells('td', row)}</tr>" for row in self.rows)
        return f"<table><thead><tr>{cells('th', self.headers)}</tr></thead><tbody>{body}</tbody></table>"


def _keep_indent(cell: str) -> str:
    """Leading spaces as ``&nbsp;``: Markdown and HTML drop them, and with them the module hierarchy."""
    text = cell.lstrip(" ")
    return "&nbsp;" * (len(cell) - len(text)) + text
