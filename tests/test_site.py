"""Executed notebooks are published with their figures linked, and the results site works in a browser.

A small notebook that saves one figure (and shows one unsaved image) is executed twice with
papermill into a temporary copy of the repository (its README, sources and committed figures), then
published and built into the site. Headless Chromium (Playwright) loads every page of the site from
a local server: every page answers 200, every image decodes, every relative link resolves.
"""
import base64
import json
import os
import shutil
import subprocess
import sys
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlsplit
from urllib.error import HTTPError
from urllib.request import urlopen

import nbformat
import pytest

from snnlib.pipeline import publish

ROOT = Path(__file__).resolve().parents[1]
NOT_COPIED = {".git", ".venv", "build", "results", "data", "figures", "notebooks"}
NB = "01_plot"

CELLS = [
    ("markdown", "A figure saved by `save_figure`, see the [report](../figures/REPORT.md)."),
    ("parameters", 'SCALE = "smoke"'),
    ("code", "import io\nimport matplotlib.pyplot as plt\nfrom IPython.display import Image, display\n"
             "from snnlib.experiments.plots import save_figure, style\nstyle()\n"
             "fig, ax = plt.subplots(figsize=(4, 3))\nax.plot(range(10), [i * i for i in range(10)])\n"
             f'save_figure(fig, "{NB}", "squares", SCALE)\nplt.show()'),
    ("code", "other, ax = plt.subplots(figsize=(2, 2))\nax.bar([0, 1], [1, 2])\nbuf = io.BytesIO()\n"
             "other.savefig(buf, format='png')\nplt.close(other)\ndisplay(Image(data=buf.getvalue()))\n"
             "print('done\\rprogress 10/10 [00:01<00:00, 9.1it/s]')"),
]


def _fixture_notebook(path: Path) -> None:
    cells = []
    for kind, src in CELLS:
        if kind == "markdown":
            cells.append(nbformat.v4.new_markdown_cell(src))
        else:
            c = nbformat.v4.new_code_cell(src)
            if kind == "parameters":
                c.metadata["tags"] = ["parameters"]
            cells.append(c)
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A repository copy with the fixture notebook executed twice (results_a, results_b) and published."""
    import papermill as pm
    base = tmp_path_factory.mktemp("site")
    repo = base / "repo"
    repo.mkdir()
    for p in ROOT.iterdir():
        if p.name not in NOT_COPIED and not p.name.startswith("."):
            (repo / p.name).symlink_to(p)
    _copy_figures(repo / "figures")
    _fixture_notebook(repo / "notebooks" / f"{NB}.ipynb")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SNNLIB_FIGURES", str(repo / "figures"))
        mp.setenv("SNNLIB_NOTEBOOKS", str(repo / "notebooks"))
        mp.setenv("MPLBACKEND", "Agg")              # as `make` exports it: only displayed files show
        for tag in ("a", "b"):
            out = base / f"results_{tag}" / NB / "cpu" / f"{NB}.ipynb"
            out.parent.mkdir(parents=True)
            pm.execute_notebook(str(repo / "notebooks" / f"{NB}.ipynb"), str(out), parameters={"SCALE": "cpu"},
                                kernel_name="python3", cwd=str(repo / "notebooks"), progress_bar=False)
        mp.setenv("SNNLIB_RESULTS", str(base / "results_a"))
        written = publish.publish_notebooks("cpu", verbose=False)
        first = written[0].read_text()
        twice = publish.publish_notebook(base / "results_b" / NB / "cpu" / f"{NB}.ipynb", written[0],
                                         repo / "figures")
        site = publish.build_site(base / "site", "cpu", root=repo, strict=True)
    return {"base": base, "repo": repo, "written": written, "first": first, "twice": twice, "site": site}


def test_published_notebook_links_the_saved_figure_and_keeps_other_images(repo):
    dst = repo["repo"] / "figures" / "notebooks" / f"{NB}.ipynb"
    assert repo["written"] == [dst]
    nb = nbformat.read(dst, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    links = [o for o in outputs if "[figure:" in o.get("data", {}).get("text/plain", "")]
    assert len(links) == 1
    html = links[0]["data"]["text/html"]
    assert 'src="../01_plot/squares.png"' in html and 'width="' in html
    assert (dst.parent / "../01_plot/squares.png").resolve().is_file()
    saved = (repo["repo"] / "figures" / NB / "squares.png").read_bytes()
    embedded = [base64.b64decode(o["data"]["image/png"]) for o in outputs if "image/png" in o.get("data", {})]
    assert len(embedded) == 1 and embedded[0] != saved        # the unsaved image stays, the saved one is linked
    assert repo["twice"] == {"linked": 1, "inline": 1}
    md = next(c for c in nb.cells if c.cell_type == "markdown")
    assert "[report](../REPORT.md)" in md.source              # relative links follow the notebook's move


def test_published_notebook_has_no_volatile_metadata_and_reruns_give_the_same_file(repo):
    dst = repo["repo"] / "figures" / "notebooks" / f"{NB}.ipynb"
    raw = json.loads(dst.read_text())
    assert "papermill" not in raw["metadata"]
    for c in raw["cells"]:
        assert not {"execution", "papermill"} & set(c["metadata"])
    stream = [o for c in raw["cells"] for o in c.get("outputs", []) if o["output_type"] == "stream"]
    assert "".join(stream[0]["text"]) == "progress 10/10 […]\n"
    assert dst.read_text() == repo["first"]                    # the second execution, published again


def test_publish_rejects_bad_input(repo, monkeypatch):
    with pytest.raises(ValueError, match="unknown scale"):
        publish.publish_notebooks("gpu")
    monkeypatch.setenv("SNNLIB_RESULTS", str(repo["base"] / "nothing"))
    with pytest.raises(FileNotFoundError, match="was not executed"):
        publish.publish_notebooks("cpu", only=[NB])
    with pytest.raises(publish.SiteError, match="holds the repository"):
        publish.build_site(repo["repo"].parent, root=repo["repo"])
    with pytest.raises(publish.SiteError, match="not a site built here"):
        publish.build_site(repo["repo"] / "figures", root=repo["repo"])
    assert (repo["repo"] / "figures" / "REPORT.md").is_file()


def _copy_figures(dst: Path) -> None:
    """The committed figures, without executed notebooks or other scales."""
    shutil.copytree(ROOT / "figures", dst, ignore=lambda d, names: [
        n for n in names if Path(d) == ROOT / "figures" and n in ("notebooks", "smoke", "paper")])


def test_site_without_executed_notebooks_says_so(tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    for p in ROOT.iterdir():                                   # the real README and sources: their links must hold
        if p.name not in NOT_COPIED and not p.name.startswith("."):
            (bare / p.name).symlink_to(p)
    _copy_figures(bare / "figures")
    os.environ["SNNLIB_FIGURES"] = str(bare / "figures")
    try:
        site = publish.build_site(tmp_path / "site", "cpu", root=bare, strict=True)
    finally:
        os.environ.pop("SNNLIB_FIGURES")
    index = (site / "index.html").read_text()
    assert "No executed notebooks are committed yet" in index
    assert (site / "figures" / "REPORT.html").is_file() and (site / "figures" / "bench" / "summary.html").is_file()


def test_site_layout(repo):
    site = repo["site"]
    assert (site / "figures" / "notebooks" / f"{NB}.html").is_file()
    index = (site / "index.html").read_text()
    assert f'href="figures/notebooks/{NB}.html"' in index
    report = (site / "figures" / "REPORT.html").read_text()
    assert 'src="00_quickstart/lif_neuron.png"' in report or 'href="00_quickstart/lif_neuron.png"' in report


# ------------------------------------------------------------------------------- browser check

def _chromium() -> str:
    """Path of a Chromium binary, installed with apt-get when root; skips the test when impossible."""
    pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        ok = subprocess.run("apt-get update -qq && apt-get install -y -qq chromium", shell=True, env=env,
                            capture_output=True, timeout=900).returncode == 0
        path = shutil.which("chromium")
        if ok and path:
            return path
        pytest.skip("apt-get could not install chromium (no network or no package)")
    pytest.skip("no Chromium found and cannot install one (needs root and apt-get)")


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):  # the browser hung up
            super().handle_error(request, client_address)


@pytest.fixture(scope="module")
def server(repo):
    httpd = _Server(("127.0.0.1", 0), partial(_Quiet, directory=str(repo["site"])))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

PAGE_CHECK = """async () => {
  const imgs = Array.from(document.images);
  await Promise.all(imgs.map(i => i.decode().catch(() => null)));
  return {
    images: imgs.map(i => ({src: i.currentSrc || i.src, width: i.naturalWidth})),
    links: Array.from(document.querySelectorAll('a[href]')).map(a => a.getAttribute('href')),
    ids: Array.from(document.querySelectorAll('[id]')).map(e => e.id),
  };
}"""


def test_every_page_loads_every_image_decodes_every_link_resolves(repo, server, tmp_path):
    from playwright.sync_api import sync_playwright
    exe = _chromium()
    pages, todo, external, problems, files = set(), [server + "index.html"], set(), [], set()
    with sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=exe,
                                                        headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            failed = []
            page.on("requestfailed", lambda r: failed.append(r.url) if r.url.startswith(server) else None)
            page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(server)
                       else route.abort())                      # offline: external resources are not fetched
            while todo:
                url = todo.pop()
                if url in pages:
                    continue
                pages.add(url)
                resp = page.goto(url, wait_until="load")
                if resp is None or resp.status != 200:
                    problems.append(f"{url}: HTTP {resp.status if resp else 'no response'}")
                    continue
                found = page.evaluate(PAGE_CHECK)
                for img in found["images"]:
                    if img["width"] <= 0:
                        problems.append(f"{url}: image {img['src']} does not decode")
                for href in found["links"]:
                    target, frag = urldefrag(urljoin(url, href))
                    if urlsplit(target).scheme in ("http", "https") and not target.startswith(server):
                        external.add(target)
                    elif not target.startswith(server):
                        external.add(target)                    # mailto: and the like
                    elif target == url.split("#")[0]:
                        if frag and frag not in found["ids"]:
                            problems.append(f"{url}: anchor #{frag} not on the page")
                    elif target.endswith(".html") or target.endswith("/"):
                        todo.append(target)
                    else:
                        files.add(target)
            problems += [f"request failed: {u}" for u in failed]
        finally:
            browser.close()
    for f in sorted(files):
        try:
            with urlopen(f, timeout=30) as r:
                if r.status != 200 or not r.read(1):
                    problems.append(f"{f}: HTTP {r.status} or empty")
        except HTTPError as e:
            problems.append(f"{f}: HTTP {e.code}")
    print(f"{len(pages)} pages, {len(files)} files; external links (not followed): {sorted(external)}",
          file=sys.stderr)
    assert not problems, "\n".join(problems)
    names = {urlsplit(u).path for u in pages}
    assert {"/index.html", "/figures/REPORT.html", f"/figures/notebooks/{NB}.html", "/figures/index.html",
            "/figures/bench/summary.html", "/figures/01_plot/index.html"} <= names
    assert any(f.endswith("/figures/01_plot/squares.png") for f in files)
