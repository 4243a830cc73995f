"""Figure helpers: one seaborn style; every figure saved as PNG and PDF under figures/."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import seaborn as sns

from ..paths import figures_dir


def style() -> None:
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 150, "savefig.bbox": "tight"})


def save_figure(fig, notebook: str, name: str, scale: str) -> list[str]:
    """Save ``fig`` as figures[/<scale>]/<notebook>/<name>.png and .pdf; returns the paths."""
    d = figures_dir(scale) / notebook
    d.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "pdf"):
        p = d / f"{name}.{ext}"
        fig.savefig(p, metadata={"CreationDate": None} if ext == "pdf" else {"Software": None})
        paths.append(str(p))
    _show_saved(fig, paths[0])
    return paths


def _show_saved(fig, png: str) -> None:
    """In a notebook kernel, display the saved PNG itself (at the inline size) and close ``fig``.

    The executed notebook then holds the file's exact bytes, so ``publish.publish_notebooks`` can
    replace them by a link to the file; the inline backend does not draw the figure a second time.
    """
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None or getattr(shell, "kernel", None) is None:
        return
    from IPython.display import Image, display
    data = Path(png).read_bytes()
    dpi = plt.rcParams["savefig.dpi"]
    scale = fig.dpi / dpi if isinstance(dpi, (int, float)) and dpi > 0 else 1.0
    width = int.from_bytes(data[16:20], "big")          # PNG IHDR width
    display(Image(data=data, format="png", width=max(1, round(width * scale))))
    plt.close(fig)
