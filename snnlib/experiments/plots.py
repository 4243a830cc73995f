"""Figure helpers: one seaborn style; every figure saved as PNG and PDF under figures/."""
from __future__ import annotations

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
    return paths
