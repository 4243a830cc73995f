"""Layout helpers shared by the study figures: legends beside or below the axes (never over the
data), whole-number ticks for epochs and time steps, plain tick labels on log axes."""
from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.ticker import (FixedLocator, FuncFormatter, LogFormatterSciNotation, MaxNLocator, NullFormatter,
                               NullLocator)


def legend_right(ax, title: str | None = None, **kw) -> None:
    """Draw ``ax``'s legend (every labelled artist) to the right of the axes, outside the data area;
    ``title`` defaults to the current legend's title."""
    old = ax.get_legend()
    if title is None and old is not None:
        title = old.get_title().get_text() or None
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, title=title, **kw)


def legend_below(fig, handles, labels, ncol: int = 4, title: str | None = None) -> None:
    """One legend for the whole figure, centred below the axes (call after ``tight_layout``)."""
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=max(1, min(ncol, len(labels))),
               frameon=False, title=title)


def integer_ticks(ax, axis: str = "x") -> None:
    """Ticks only at whole numbers on ``axis`` ("x" or "y"), e.g. epochs."""
    (ax.xaxis if axis == "x" else ax.yaxis).set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def log_ticks_at(ax, values, axis: str = "x") -> None:
    """On a log ``axis``, put the major ticks at ``values`` (e.g. the measured T) labelled as plain
    numbers, and no minor tick labels."""
    a = ax.xaxis if axis == "x" else ax.yaxis
    vals = sorted({float(v) for v in values})
    a.set_major_locator(FixedLocator(vals))
    a.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    a.set_minor_locator(NullLocator())
    a.set_minor_formatter(NullFormatter())


class _PlainLogFormatter(LogFormatterSciNotation):
    """Matplotlib's choice of which log ticks to label, printed as plain numbers (``20``, ``0.05``)."""

    def __call__(self, x, pos=None):
        return f"{x:g}" if super().__call__(x, pos) else ""


def plain_log_labels(ax, axis: str = "y") -> None:
    """On a log ``axis``, print the tick labels as plain numbers (``20``, not ``2 x 10^1``)."""
    a = ax.xaxis if axis == "x" else ax.yaxis
    a.set_major_formatter(_PlainLogFormatter())
    a.set_minor_formatter(_PlainLogFormatter(labelOnlyBase=False))


def handles_for(palette: dict, marker: str = "o") -> tuple[list, list]:
    """Legend handles and labels, one line with ``marker`` per ``label: colour`` of ``palette``."""
    labels = list(palette)
    return [plt.Line2D([], [], color=palette[n], marker=marker, linewidth=2) for n in labels], labels
