"""Notebook housekeeping: strip outputs, and convert to/from percent-format scripts.

    python -m snnlib.experiments.nbtools strip notebooks/*.ipynb
    python -m snnlib.experiments.nbtools py2nb draft.py notebooks/01_ide_mpis.ipynb
    python -m snnlib.experiments.nbtools nb2py notebooks/01_ide_mpis.ipynb draft.py

Percent format: cells start with ``# %%`` (code) or ``# %% [markdown]``; ``tags=["parameters"]``
after the marker tags the cell. Markdown lines are written as ``# `` comments.
Notebooks are committed without outputs (``strip``), with the parameters cell tagged.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import nbformat

_MARK = re.compile(r"^# %%(?P<md> \[markdown\])?(?P<rest>.*)$")


def strip(path) -> bool:
    """Remove outputs, execution counts and volatile metadata; True when the file changed."""
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    before = nbformat.writes(nb)
    for c in nb.cells:
        if c.cell_type == "code":
            c.outputs = []
            c.execution_count = None
        for k in ("execution", "papermill", "collapsed", "scrolled"):
            c.metadata.pop(k, None)
    for k in ("papermill", "widgets"):
        nb.metadata.pop(k, None)
    nb.cells = [c for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])]
    after = nbformat.writes(nb)
    if after != before:
        path.write_text(after)
        return True
    return False


def py2nb(src, dst) -> None:
    """Percent-format script -> notebook without outputs (python3 kernel)."""
    cells, cur, kind, tags = [], [], None, []

    def flush():
        if kind is None:
            return
        text = "\n".join(cur).strip("\n")
        if kind == "markdown":
            text = "\n".join(l[2:] if l.startswith("# ") else l.lstrip("#") for l in text.splitlines())
            cell = nbformat.v4.new_markdown_cell(text)
        else:
            cell = nbformat.v4.new_code_cell(text)
        if tags:
            cell.metadata["tags"] = list(tags)
        cells.append(cell)

    for line in Path(src).read_text().splitlines():
        m = _MARK.match(line)
        if m:
            flush()
            kind = "markdown" if m.group("md") else "code"
            t = re.search(r"tags\s*=\s*(\[.*?\])", m.group("rest"))
            tags = json.loads(t.group(1)) if t else []
            cur = []
        elif kind is not None:
            cur.append(line)
    flush()
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (snnlib)", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nbformat.write(nb, str(dst))


def nb2py(src, dst) -> None:
    """Notebook -> percent-format script (outputs dropped)."""
    nb = nbformat.read(str(src), as_version=4)
    out = []
    for c in nb.cells:
        tags = c.metadata.get("tags", [])
        t = f" tags={json.dumps(tags)}" if tags else ""
        if c.cell_type == "markdown":
            out.append(f"# %% [markdown]{t}")
            out += ["# " + l if l else "#" for l in c.source.splitlines()]
        else:
            out.append(f"# %%{t}")
            out += c.source.splitlines()
        out.append("")
    Path(dst).write_text("\n".join(out))


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(__doc__)
        return 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "strip":
        for p in rest:
            if strip(p):
                print(f"stripped {p}")
        return 0
    if cmd == "py2nb" and len(rest) == 2:
        py2nb(*rest)
        return 0
    if cmd == "nb2py" and len(rest) == 2:
        nb2py(*rest)
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
