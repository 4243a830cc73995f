"""Package structure: imports run one way, from studies and notebooks down to the core, never up.

Layers, bottom to top (a module imports only from its own layer or below):

    paths, errors, registry
    experiments        io, config, provenance, cache, claims, verdict, published, tables, plots, nbtools
    core               neurons -> layers -> equilibrium, online -> models -> methods; metrics; data; train
    pipeline           runs, executors, reproduce, report, publish, protocols
    interop            NIR export and import, peer simulators
    studies            one module per paper study, and the Study context
    bench              the cross-library benchmark
    __main__           the command line

Every import of an snnlib module sits at the top of its module: an import inside a function to
dodge a cycle hides the cycle instead of removing it. A function may import only an optional peer
or a heavy third-party dependency named in ``LAZY_ALLOWED``.
"""
from __future__ import annotations

import ast
import functools
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "snnlib"

#: third-party modules a function may import: optional peers and dependencies slow to import that
#: only a few functions need (top-level package names)
LAZY_ALLOWED = {
    "nir", "nirtorch", "norse", "snntorch", "spikingjelly",    # peer simulators (NIR interop, bench)
    "submitit",                                                # cluster executors only
    "tonic", "torchvision", "PIL",                             # dataset readers, only when reading one
    "papermill", "nbformat", "nbconvert", "mistune", "pygments", "IPython", "playwright",  # notebooks, site
    "pandas", "matplotlib", "ptflops",                         # tables and figures of a few helpers
}

BASE = {"snnlib", "snnlib.paths", "snnlib.errors", "snnlib.registry"}
EXPERIMENTS = ("snnlib.experiments",)
PIPELINE = ("snnlib.pipeline",)
CORE = ("neurons", "layers", "equilibrium", "online", "models", "methods", "metrics", "data", "train")
ABOVE_CORE = ("snnlib.studies", "snnlib.interop", "snnlib.bench", "snnlib.__main__")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.lru_cache(maxsize=1)
def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(module: str, path: Path) -> list[tuple[str, int, bool]]:
    """Every module ``module`` imports: (absolute name, line, inside a function?). ``from pkg import x``
    counts as importing ``pkg.x`` when that is a module of snnlib, else ``pkg``."""
    known = modules()
    is_package = path.name == "__init__.py"
    out = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                out.extend((a.name, child.lineno, in_function) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = _absolute(child, module, is_package)
                for a in child.names:
                    sub = f"{base}.{a.name}"
                    out.append((sub if sub in known else base, child.lineno, in_function))
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(ast.parse(path.read_text()), False)
    return out


@functools.lru_cache(maxsize=1)
def all_imports() -> tuple:
    """(importing module, its file, line, imported module, inside a function?) for all of snnlib."""
    return tuple((module, path.relative_to(PACKAGE.parent), line, target, in_function)
                 for module, path in modules().items() for target, line, in_function in imports(module, path))


def within(name: str, packages) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def report(offenders: list[str], rule: str) -> str:
    offenders = list(dict.fromkeys(offenders))
    return f"{rule}; {len(offenders)} offender(s):\n  " + "\n  ".join(offenders)


# ---- imports sit at the top of their module ----------------------------------------------------

def test_no_snnlib_module_is_imported_inside_a_function():
    offenders = [f"{path}:{line} imports {target}" for module, path, line, target, lazy in all_imports()
                 if lazy and within(target, ("snnlib",))]
    assert not offenders, report(offenders, "import snnlib modules at the top of the module (a function-level "
                                            "import hides a cycle: move the code to the layer it belongs to)")


def test_functions_import_only_optional_or_heavy_third_party_modules():
    offenders = [f"{path}:{line} imports {target}" for module, path, line, target, lazy in all_imports()
                 if lazy and not within(target, ("snnlib",)) and target.split(".")[0] not in LAZY_ALLOWED]
    assert not offenders, report(offenders, "import at the top of the module, or add the package to LAZY_ALLOWED "
                                            "if it is an optional peer or a heavy dependency")


# ---- imports point down ------------------------------------------------------------------------

def _offenders(importers, forbidden) -> list[str]:
    return [f"{path}:{line}: {module} imports {target}" for module, path, line, target, _ in all_imports()
            if importers(module) and forbidden(target)]


def _core(name: str) -> bool:
    return within(name, tuple(f"snnlib.{p}" for p in CORE))


def test_the_base_modules_import_only_each_other():
    bad = _offenders(lambda m: m in BASE - {"snnlib"}, lambda t: within(t, ("snnlib",)) and t not in BASE)
    assert not bad, report(bad, "paths, errors and registry sit at the bottom and import no other snnlib module")


def test_experiments_import_neither_the_core_nor_anything_above():
    bad = _offenders(lambda m: within(m, EXPERIMENTS),
                     lambda t: within(t, ("snnlib",)) and t not in BASE and not within(t, EXPERIMENTS))
    assert not bad, report(bad, "experiments (configs, records, tables, claims, figures) import only "
                                "paths, errors, registry and each other")


def test_the_core_imports_nothing_above_it():
    above = lambda t: within(t, PIPELINE + ABOVE_CORE)   # noqa: E731
    bad = _offenders(_core, above)
    assert not bad, report(bad, "the core (neurons ... train) must not import the pipeline (runs, executors, "
                                "reproduce, report, publish, protocols), studies, interop, bench or the CLI")


def test_the_pipeline_imports_no_study_and_not_the_cli():
    bad = _offenders(lambda m: within(m, PIPELINE), lambda t: within(t, ABOVE_CORE))
    assert not bad, report(bad, "the pipeline serves studies and the CLI; it imports neither")


def test_interop_imports_no_study_nor_the_benchmark():
    bad = _offenders(lambda m: within(m, ("snnlib.interop",)),
                     lambda t: within(t, ("snnlib.studies", "snnlib.bench", "snnlib.__main__")))
    assert not bad, report(bad, "interop sits below studies, bench and the CLI")


def test_studies_import_neither_the_benchmark_nor_the_cli():
    bad = _offenders(lambda m: within(m, ("snnlib.studies",)), lambda t: within(t, ("snnlib.bench", "snnlib.__main__")))
    assert not bad, report(bad, "studies sit below bench and the CLI")


def test_only_the_cli_itself_imports_the_cli():
    bad = _offenders(lambda m: m != "snnlib.__main__" and not within(m, ("snnlib.bench",)),
                     lambda t: t == "snnlib.__main__")
    assert not bad, report(bad, "nothing imports snnlib.__main__ (run it as `python -m snnlib` instead)")


def test_core_packages_form_no_cycle():
    """Package-level graph of the core: an edge a -> b when a module of a imports a module of b."""
    edges: dict[str, set[str]] = {p: set() for p in CORE}
    where: dict[tuple[str, str], str] = {}
    for module, path, line, target, _ in all_imports():
        if _core(module) and _core(target):
            a, b = module.split(".")[1], target.split(".")[1]
            if a != b:
                edges[a].add(b)
                where.setdefault((a, b), f"{path}:{line} imports {target}")
    cycles, state = [], {}

    def visit(p, stack):
        state[p] = "open"
        for q in sorted(edges[p]):
            if state.get(q) == "open":
                loop = stack[stack.index(q):] + [q]
                cycles.append(" -> ".join(loop) + "  (" + "; ".join(where[(x, y)] for x, y in zip(loop, loop[1:]))
                              + ")")
            elif q not in state:
                visit(q, stack + [q])
        state[p] = "done"

    for p in CORE:
        if p not in state:
            visit(p, [p])
    assert not cycles, report(cycles, "core packages import each other in a circle")


def test_the_rules_see_the_whole_package():
    """The checks above read every module and resolve relative imports (guards against a silent no-op)."""
    found = modules()
    assert {"snnlib.neurons.functional", "snnlib.pipeline.runs", "snnlib.__main__"} <= set(found)
    targets = {t for m, _, _, t, _ in all_imports() if m == "snnlib.pipeline.runs"}
    assert {"snnlib.train", "snnlib.pipeline.executors", "snnlib.experiments.config"} <= targets
