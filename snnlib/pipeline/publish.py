"""Executed notebooks into the repository, and a static results site.

    python -m snnlib.pipeline.publish notebooks --scale cpu      # results/ -> figures/notebooks/
    python -m snnlib.pipeline.publish site --out build/site       # make site

``publish_notebooks(scale)`` copies ``results/<nb>/<scale>/<nb>.ipynb`` to ``figures/notebooks/``
(``figures/<scale>/notebooks/`` for other scales) with their outputs, but every image whose bytes
equal a saved figure (``plots.save_figure`` displays the saved PNG itself) becomes a link to that
file, and the metadata that changes on every run (timestamps, durations) is dropped.

``build_site`` renders the committed files into a static site that mirrors the repository layout,
so every relative link keeps its meaning: ``README.md`` becomes ``index.html``, any ``.md`` and
``.ipynb`` its ``.html`` page, a folder its ``index.html`` (a figure gallery), a source file a
highlighted page; figures and PDFs are copied. nbconvert renders notebooks exactly as JupyterLab
shows them and is already installed with it, so no heavier tool (Jupyter Book, Sphinx) is needed.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import html
import os
import posixpath
import re
import shutil
import sys
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from ..paths import ROOT, SCALES, figures_dir, notebooks, notebooks_dir, results_dir
from ..experiments.io import write_text

# ---------------------------------------------------------------------------------- notebooks

_VOLATILE_CELL_META = ("execution", "papermill", "collapsed", "scrolled")
_TQDM_TIMING = re.compile(r"\[\d+:\d+(?::\d+)?<[^\]]*\]")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _figure_index(fig_root: Path, notebook: str) -> dict[str, Path]:
    """sha256 of every PNG under ``fig_root`` -> its path; the notebook's own folder wins ties."""
    index: dict[str, Path] = {}
    own = fig_root / notebook
    for p in sorted(fig_root.rglob("*.png"), key=lambda q: (own in q.parents, str(q))):
        index[_sha(p.read_bytes())] = p          # sorted so the notebook's own files come last
    return index


def _rel(target: Path, start: Path) -> str:
    return Path(os.path.relpath(target, start)).as_posix()


_MD_LINK = re.compile(r"(!?\[[^\]]*\]\()([^)\s]+)")
_ATTR_LINK = re.compile(r"""(\b(?:href|src)=)(["'])(.*?)\2""", re.IGNORECASE)


def _is_relative(url: str) -> bool:
    parts = urlsplit(url)
    return bool(parts.path) and not parts.scheme and not parts.netloc and not parts.path.startswith("/")


def _relink_markdown(text: str, src_dir: Path, dst_dir: Path) -> str:
    """Rewrite the relative links of a markdown cell written in ``src_dir`` to read from ``dst_dir``."""
    def move(url: str) -> str:
        if not _is_relative(url):
            return url
        parts = urlsplit(url)
        target = Path(os.path.normpath(src_dir / unquote(parts.path)))
        new = quote(_rel(target, dst_dir))
        return new + (f"?{parts.query}" if parts.query else "") + (f"#{parts.fragment}" if parts.fragment else "")

    text = _MD_LINK.sub(lambda m: m.group(1) + move(m.group(2)), text)
    return _ATTR_LINK.sub(lambda m: m.group(1) + m.group(2) + move(m.group(3)) + m.group(2), text)


def _clean_stream(text: str) -> str:
    """What a terminal shows of a progress bar (last ``\\r`` segment per line), without its timings."""
    lines = [line.rsplit("\r", 1)[-1] for line in text.split("\n")]
    return _TQDM_TIMING.sub("[…]", "\n".join(lines))


def publish_notebook(src, dst, fig_root) -> dict:
    """Copy one executed notebook ``src`` to ``dst``: figures linked, volatile metadata dropped.

    Returns ``{"linked": n, "inline": m}``: images replaced by links and images kept embedded.
    """
    import nbformat
    src, dst, fig_root = Path(src), Path(dst), Path(fig_root)
    if not src.is_file():
        raise FileNotFoundError(f"no executed notebook at {src}")
    nb = nbformat.read(src, as_version=4)
    index = _figure_index(fig_root, src.stem) if fig_root.is_dir() else {}
    counts = {"linked": 0, "inline": 0}
    for k in ("papermill", "widgets"):
        nb.metadata.pop(k, None)
    for cell in nb.cells:
        for k in _VOLATILE_CELL_META:
            cell.metadata.pop(k, None)
        if "injected-parameters" in cell.metadata.get("tags", []) and "id" in cell:
            cell.id = "injected-parameters"                # papermill draws a new random id every run
        if cell.cell_type == "markdown":
            cell.source = _relink_markdown(cell.source, notebooks_dir(), dst.parent)
        if cell.cell_type != "code":
            continue
        outputs = []
        for out in cell.outputs:
            if out.get("output_type") == "stream":
                out["text"] = _clean_stream(out.get("text", ""))
            data = out.get("data", {})
            png = data.get("image/png")
            if png is not None:
                raw = base64.b64decode(png if isinstance(png, str) else "".join(png))
                path = index.get(_sha(raw))
                if path is None:
                    counts["inline"] += 1
                else:
                    counts["linked"] += 1
                    out = _figure_link(path, dst.parent, out.get("metadata", {}).get("image/png", {}))
            if out.get("data", {}).get("application/vnd.jupyter.widget-view+json") is not None:
                continue                                   # widget state is not saved: nothing to show
            outputs.append(out)
        cell.outputs = outputs
    write_text(dst, nbformat.writes(nb) + "\n")
    return counts


def _figure_link(path: Path, from_dir: Path, meta: dict):
    """A display output that shows the saved figure file instead of embedding its bytes."""
    import nbformat
    rel = quote(_rel(path, from_dir))
    width = f' width="{int(meta["width"])}"' if isinstance(meta.get("width"), (int, float)) else ""
    return nbformat.v4.new_output("display_data", data={
        "text/html": f'<img src="{rel}" alt="{html.escape(path.stem)}"{width}>',
        "text/markdown": f"![{path.stem}]({rel})",
        "text/plain": f"[figure: {rel}]",
    })


def published_dir(scale: str) -> Path:
    """Where ``publish_notebooks`` writes: ``figures/notebooks`` (cpu) or ``figures/<scale>/notebooks``."""
    return figures_dir(scale) / "notebooks"


def publish_notebooks(scale: str = "cpu", only: list[str] | None = None, *, verbose: bool = True) -> list[Path]:
    """Publish every executed notebook of ``scale`` (see ``publish_notebook``); returns the written paths.

    Call at the end of ``reproduce(scale)``. Notebooks never executed at this scale are skipped
    with a message; an executed notebook is required when ``only`` names it.
    """
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {SCALES}")
    names = notebooks() if only is None else list(only)
    written = []
    for nb in names:
        src = results_dir() / nb / scale / f"{nb}.ipynb"
        if not src.is_file():
            if only is not None:
                raise FileNotFoundError(f"{nb} was not executed at scale {scale!r}: expected {src}")
            if verbose:
                print(f"[publish {scale}] {nb}: not executed yet, skipped", file=sys.stderr, flush=True)
            continue
        dst = published_dir(scale) / f"{nb}.ipynb"
        c = publish_notebook(src, dst, figures_dir(scale))
        if verbose:
            print(f"[publish {scale}] {nb}: {dst} ({c['linked']} figures linked, {c['inline']} images inline)",
                  file=sys.stderr, flush=True)
        written.append(dst)
    return written


# ---------------------------------------------------------------------------------------- site

_SOURCE_SUFFIXES = {".py", ".yaml", ".yml", ".toml", ".txt", ".cfg", ".sh", ".json", ".csv"}
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".svg", ".gif"}
_SKIP_DIRS = {"__pycache__", ".ipynb_checkpoints"}

CSS = """
body{font:16px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1f2328;background:#fff}
.site-nav{background:#24292f;padding:.6em 1.2em;position:sticky;top:0;z-index:100}
.site-nav a{color:#fff;margin-right:1.3em;text-decoration:none;font-weight:500}
.site-nav a:first-child{font-weight:700}
.site-nav a:hover{text-decoration:underline}
main{max-width:1100px;margin:0 auto;padding:1em 1.5em 3em}
main table{border-collapse:collapse;margin:1em 0;font-size:.88em;display:block;overflow-x:auto}
main th,main td{border:1px solid #d0d7de;padding:.3em .6em;vertical-align:top}
main tr:nth-child(2n){background:#f6f8fa}
main code{background:#f2f4f6;padding:.1em .3em;border-radius:4px;font-size:.9em}
main pre{background:#f6f8fa;padding:.8em;overflow-x:auto;border-radius:6px}
main pre code{background:none;padding:0}
main img{max-width:100%}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(320px,1fr));gap:1.2em}
.gallery figure{margin:0;border:1px solid #d0d7de;border-radius:6px;padding:.6em;background:#fff}
.gallery figcaption{font-size:.9em;margin-top:.4em}
.box{border:1px solid #d0d7de;border-radius:6px;padding:.2em 1.2em;background:#f6f8fa;margin:1em 0}
.note{color:#57606a}
"""


_MARKER = ".snnlib-site"


class SiteError(RuntimeError):
    """The site could not be built (problems listed in the message)."""


def _slug(text: str, seen: dict) -> str:
    s = re.sub(r"<[^>]+>", "", html.unescape(text)).strip().lower()
    s = re.sub(r"[^\w\- ]", "", s).replace(" ", "-") or "section"
    n = seen.get(s, 0)
    seen[s] = n + 1
    return s if n == 0 else f"{s}-{n}"


def markdown_to_html(text: str) -> str:
    """GitHub-flavoured enough markdown (tables, strikethrough, autolinks) to HTML, headings with ids."""
    import mistune

    seen: dict = {}

    class Renderer(mistune.HTMLRenderer):
        def heading(self, text, level, **attrs):
            return f'<h{level} id="{_slug(text, seen)}">{text}</h{level}>\n'

    md = mistune.create_markdown(renderer=Renderer(escape=False),
                                 plugins=["table", "strikethrough", "url"])
    return md(text)


class _Site:
    """One build: pages are produced on demand, following every relative link from the seeds."""

    def __init__(self, root: Path, out: Path, scale: str):
        self.root, self.out, self.scale = root, out, scale
        self.fig_rel = Path(os.path.relpath(figures_dir(scale), root)).as_posix()
        if self.fig_rel.startswith(".."):
            raise SiteError(f"the figures folder {figures_dir(scale)} is outside the site root {root}")
        self.done: set[str] = set()
        self.queue: list[str] = []
        self.problems: list[str] = []

    # paths are repository-relative POSIX strings; "" is the root folder
    def exists(self, rel: str) -> bool:
        return (self.root / rel).exists()

    def is_dir(self, rel: str) -> bool:
        return (self.root / rel).is_dir()

    def site_path(self, rel: str) -> str:
        if self.is_dir(rel):
            return posixpath.join(rel, "index.html") if rel else "index.html"
        if rel == "README.md":
            return "index.html"
        p = Path(rel)
        if p.suffix in (".md", ".ipynb"):
            return p.with_suffix(".html").as_posix()
        if p.suffix in _SOURCE_SUFFIXES or p.name in ("Makefile", "LICENSE"):
            return rel + ".html"
        return rel

    def want(self, rel: str) -> None:
        if rel not in self.done and rel not in self.queue:
            self.queue.append(rel)

    def rewrite(self, page_html: str, src_dir: str, where: str) -> str:
        """Map every relative href/src from repository paths to site paths, queueing the targets."""
        page_dir = src_dir

        def fix(m):
            url = html.unescape(m.group(3))
            if not _is_relative(url):
                return m.group(0)
            parts = urlsplit(url)
            rel = posixpath.normpath(posixpath.join(src_dir, unquote(parts.path)))
            if rel == ".":
                rel = ""
            if rel.startswith(".."):
                self.problems.append(f"{where}: link {url!r} leaves the repository")
                return m.group(0)
            if not self.exists(rel):
                self.problems.append(f"{where}: link {url!r} points to a missing file {rel}")
                return m.group(0)
            self.want(rel)
            target = posixpath.relpath(self.site_path(rel), page_dir or ".")
            new = quote(target) + (f"#{parts.fragment}" if parts.fragment else "")
            return m.group(1) + m.group(2) + html.escape(new) + m.group(2)

        return _ATTR_LINK.sub(fix, page_html)

    def nav(self, src_dir: str) -> str:
        """Navigation bar with repository-relative links (rewritten like any other link)."""
        items = [("snnlib", "README.md", ""), ("Report", f"{self.fig_rel}/REPORT.md", ""),
                 ("Notebooks", "README.md", "#notebooks-executed"), ("Figures", self.fig_rel, ""),
                 ("Benchmarks", "figures/bench/summary.md", "")]
        links = []
        for label, rel, frag in items:
            if self.exists(rel):
                href = posixpath.relpath(rel, src_dir or ".") + frag
                links.append(f'<a href="{html.escape(href)}">{label}</a>')
        return '<nav class="site-nav">' + "".join(links) + "</nav>"

    def page(self, title: str, body: str) -> str:
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
                f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n"
                f"<body>\n{{nav}}\n<main>\n{body}\n</main>\n</body></html>\n")

    # ---- producers: return full HTML (with a "{nav}" placeholder for wrapped pages)
    def build_markdown(self, rel: str) -> str:
        text = (self.root / rel).read_text(encoding="utf-8")
        body = markdown_to_html(text)
        if rel == "README.md":
            body = self.contents_box() + body
        m = re.search(r"<h1[^>]*>(.*?)</h1>", body)
        title = re.sub(r"<[^>]+>", "", m.group(1)) if m else rel
        return self.page(title, body)

    def contents_box(self) -> str:
        """The index's summary of what the site holds (repository-relative links)."""
        f = self.fig_rel
        rows = [f'<h2 id="on-this-site">On this site ({html.escape(self.scale)} scale)</h2><ul>']
        if self.exists(f"{f}/REPORT.md"):
            rows.append(f'<li><a href="{f}/REPORT.md">Claims report</a>: every claim, our measurement, '
                        "the threshold, the verdict and the published number</li>")
        rows.append(f'<li><a href="{f}/">Figures</a>, by notebook</li>')
        if self.exists("figures/bench/summary.md"):
            rows.append('<li><a href="figures/bench/summary.md">Benchmark tables</a> against SpikingJelly, '
                        "snnTorch and Norse</li>")
        rows.append("</ul>")
        nbs = sorted((self.root / f / "notebooks").glob("*.ipynb")) if self.is_dir(f"{f}/notebooks") else []
        rows.append('<h3 id="notebooks-executed">Executed notebooks</h3>')
        if nbs:
            rows.append("<ul>" + "".join(f'<li><a href="{f}/notebooks/{quote(p.name)}">{html.escape(p.stem)}</a>'
                                         "</li>" for p in nbs) + "</ul>")
        else:
            rows.append('<p class="note">No executed notebooks are committed yet: <code>make reproduce</code> '
                        f"runs them and publishes them to <code>{html.escape(f)}/notebooks/</code>; then "
                        "<code>make site</code> shows them here.</p>")
        return '<div class="box">' + "\n".join(rows) + "</div>\n"

    def build_notebook(self, rel: str) -> str:
        import nbformat
        from nbconvert import HTMLExporter
        nb = nbformat.read(self.root / rel, as_version=4)
        exporter = HTMLExporter(template_name="lab")
        body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": Path(rel).stem}})
        style = "<style>body{margin:0}.site-nav{background:#24292f;padding:.6em 1.2em;position:sticky;top:0;z-index:100;" \
                "font:16px system-ui,sans-serif;margin:calc(-1 * var(--jp-notebook-padding, 0px)) " \
                "calc(-1 * var(--jp-notebook-padding, 0px)) 1em}.site-nav a{color:#fff;margin-right:1.3em;text-decoration:none;" \
                "font-weight:500}.site-nav a:first-child{font-weight:700}</style>"
        body = body.replace("</head>", style + "</head>", 1)
        return re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + "\n{nav}", body, count=1)

    def build_source(self, rel: str) -> str:
        from pygments import highlight
        from pygments.formatters import HtmlFormatter
        from pygments.lexers import TextLexer, get_lexer_for_filename
        from pygments.util import ClassNotFound
        text = (self.root / rel).read_text(encoding="utf-8", errors="replace")
        try:
            lexer = get_lexer_for_filename(rel, text)
        except ClassNotFound:
            lexer = TextLexer()
        fmt = HtmlFormatter(linenos="table", cssclass="highlight")
        body = (f"<h1><code>{html.escape(rel)}</code></h1>\n<style>{fmt.get_style_defs('.highlight')}</style>\n"
                + highlight(text, lexer, fmt))
        return self.page(rel, body)

    def build_folder(self, rel: str) -> str:
        d = self.root / rel
        title = rel or "snnlib"
        parts = [f"<h1>{html.escape(title)}/</h1>"]
        subdirs, images, others = [], [], []
        other_scales = {"smoke", "cpu", "paper"} - {self.scale}
        for p in sorted(d.iterdir()):
            if p.name.startswith(".") or p.name in _SKIP_DIRS:
                continue
            if p.is_dir():
                if rel == self.fig_rel and p.name in other_scales:
                    continue
                subdirs.append(p)
            elif p.suffix.lower() in _IMAGE_SUFFIXES:
                images.append(p)
            elif p.suffix.lower() != ".pdf" or not p.with_suffix(".png").exists():
                others.append(p)
        if posixpath.dirname(rel) == self.fig_rel and self.exists(f"{self.fig_rel}/notebooks/{d.name}.ipynb"):
            parts.append(f'<p>Made by the executed notebook <a href="../notebooks/{quote(d.name)}.ipynb">'
                         f"{html.escape(d.name)}</a>.</p>")
        if rel == f"{self.fig_rel}/notebooks" and not any(p.suffix == ".ipynb" for p in others):
            parts.append('<p class="note">No executed notebooks here yet (<code>make reproduce</code>).</p>')
        if subdirs:
            parts.append("<ul>" + "".join(
                f'<li><a href="{quote(p.name)}/">{html.escape(p.name)}/</a>{self._folder_note(p)}</li>'
                for p in subdirs) + "</ul>")
        if images:
            figs = []
            for p in images:
                pdf = p.with_suffix(".pdf")
                extra = f' · <a href="{quote(pdf.name)}">PDF</a>' if pdf.exists() else ""
                figs.append(f'<figure><a href="{quote(p.name)}"><img src="{quote(p.name)}" alt="{html.escape(p.stem)}">'
                            f'</a><figcaption><code>{html.escape(p.stem)}</code>{extra}</figcaption></figure>')
            parts.append('<div class="gallery">' + "".join(figs) + "</div>")
        if others:
            parts.append("<ul>" + "".join(f'<li><a href="{quote(p.name)}">{html.escape(p.name)}</a></li>'
                                          for p in others) + "</ul>")
        if not (subdirs or images or others):
            parts.append('<p class="note">This folder is empty.</p>')
        return self.page(f"{title}/", "\n".join(parts))

    def _folder_note(self, p: Path) -> str:
        n = len(list(p.glob("*.png")))
        return f" ({n} figures)" if n else ""

    # ---- the build loop
    def run(self) -> list[str]:
        f = self.fig_rel
        seeds = ["README.md", f"{f}/REPORT.md", f"{f}/", f"{f}/notebooks/", "figures/bench/summary.md"]
        for s in seeds:
            rel = s.rstrip("/")
            if self.exists(rel):
                self.want(rel)
        if not self.exists("README.md"):
            raise SiteError(f"no README.md in {self.root}: the index page is made from it")
        while self.queue:
            rel = self.queue.pop(0)
            self.done.add(rel)
            src_dir = rel if self.is_dir(rel) else posixpath.dirname(rel)
            dst = self.out / self.site_path(rel)
            suffix = Path(rel).suffix
            if self.is_dir(rel):
                doc = self.build_folder(rel)
            elif suffix == ".md":
                doc = self.build_markdown(rel)
            elif suffix == ".ipynb":
                doc = self.build_notebook(rel)
            elif self.site_path(rel).endswith(".html") and not rel.endswith(".html"):
                doc = self.build_source(rel)
            else:
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(self.root / rel, dst)
                continue
            doc = self.rewrite(doc, src_dir, rel or "/")
            doc = doc.replace("{nav}", self.rewrite(self.nav(src_dir), src_dir, "navigation"), 1)
            write_text(dst, doc)
            os.chmod(dst, 0o644)                           # mkstemp makes 0600; a web server must read it
        return sorted(self.done)


def build_site(out=None, scale: str = "cpu", *, root=None, strict: bool = False) -> Path:
    """Build the static site of ``scale`` into ``out`` (default ``build/site``) from the files in ``root``
    (default: the repository), replacing what was there; returns ``out``.

    Broken relative links are printed, or raise ``SiteError`` when ``strict``.
    """
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {SCALES}")
    root = Path(root or ROOT).absolute()
    out = Path(out or root / "build" / "site").absolute()
    if out == root or out in root.parents:
        raise SiteError(f"refusing to build the site into {out}: it holds the repository")
    if out.exists() and any(out.iterdir()) and not (out / _MARKER).exists():
        raise SiteError(f"refusing to replace {out}: it is not empty and not a site built here")
    tmp = out.with_name(f".{out.name}.building")
    if tmp.exists():
        shutil.rmtree(tmp)
    site = _Site(root, tmp, scale)
    files = site.run()
    write_text(tmp / _MARKER, "built by snnlib.pipeline.publish.build_site; replaced on every build\n")
    if site.problems and strict:
        shutil.rmtree(tmp)
        raise SiteError("broken links:\n  " + "\n  ".join(site.problems))
    for p in site.problems:
        print(f"[site] warning: {p}", file=sys.stderr)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    print(f"[site] {len(files)} files from {root} -> {out}/index.html", file=sys.stderr)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m snnlib.pipeline.publish", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    n = sub.add_parser("notebooks", help="copy the executed notebooks of a scale into figures/")
    n.add_argument("--scale", default="cpu")
    n.add_argument("--only", nargs="*", help="notebook names")
    s = sub.add_parser("site", help="build the static site (make site)")
    s.add_argument("--scale", default="cpu")
    s.add_argument("--out", default=None, help="output folder (default build/site)")
    s.add_argument("--strict", action="store_true", help="fail on a broken link")
    args = p.parse_args(argv)
    try:
        if args.cmd == "notebooks":
            publish_notebooks(args.scale, args.only)
        else:
            build_site(args.out, args.scale, strict=args.strict)
    except (SiteError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
