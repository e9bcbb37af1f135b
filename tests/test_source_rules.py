"""Rules the source keeps (issue 14): checked by reading the files, so a regression fails here."""
import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CODE = [p for root in ("src", "linear_probe", "multimodal_finetune", "automated-concept-discovery", "segmentation",
                       "benchmarks") for p in (REPO / root).rglob("*.py")]


def test_the_scan_sees_the_code():
    names = {p.name for p in CODE}
    assert {"report.py", "runtime.py", "linear_eval.py", "main.py"} <= names and len(CODE) > 80


def test_no_library_module_switches_the_matplotlib_backend_or_uses_pyplot():
    """A notebook user's backend stays theirs: figures are bare Figure objects (panderm.report.subplots)."""
    offenders = [f"{p.relative_to(REPO)}:{i}" for p in (REPO / "src" / "panderm").rglob("*.py")
                 for i, line in enumerate(p.read_text().splitlines(), 1)
                 if re.search(r"matplotlib\.use\(|import matplotlib\.pyplot|from matplotlib import pyplot", line)]
    assert not offenders, offenders


def test_comments_cite_files_of_this_repository():
    """The reference notes (ref-<name>.md, cited as "ref-<name> §6") live outside the repository; comments cite
    docs/."""
    cite = re.compile("ref" + r"-[a-z0-9-]+(\.md|\b.{0,3}§)")  # split so this file does not match itself
    assert cite.search("(ref-" + "panderm2 §6.2)") and cite.search("ref-" + "dermfm-zero.md")
    offenders = [f"{p.relative_to(REPO)}:{i}" for p in CODE + list((REPO / "tests").rglob("*.py"))
                 for i, line in enumerate(p.read_text().splitlines(), 1) if cite.search(line)]
    assert not offenders, offenders


def _import_graph() -> dict[str, set[str]]:
    """panderm module → the panderm modules it imports (module level or inside functions alike).

    `panderm/__init__.py` imports only inside its lazy `__getattr__` (so `import panderm` stays cheap), and a
    `from panderm import __version__` is the only thing taken from it: the root is a leaf of this graph.
    """
    src = REPO / "src"
    files = {".".join(p.relative_to(src).with_suffix("").parts[:-1] if p.name == "__init__.py"
                      else p.relative_to(src).with_suffix("").parts): p for p in (src / "panderm").rglob("*.py")}
    edges: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        if mod == "panderm":
            continue
        package = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                edges[mod] |= {a.name for a in node.names if a.name in files}
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(package[:len(package) - node.level + 1] + [node.module] if node.module else
                                package[:len(package) - node.level + 1]) if node.level else node.module or ""
                for alias in node.names:
                    target = f"{base}.{alias.name}"
                    edges[mod].add(target if target in files else base)
        edges[mod] &= set(files)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    comp.append(top)
                    if top == node:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_the_cycle_finder_finds_a_planted_cycle():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(edges) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_graph_sees_relative_imports():
    edges = _import_graph()
    assert "panderm.errors" in edges["panderm.models.registry"]
    assert len(edges) > 80


def test_no_import_cycle():
    assert _cycles(_import_graph()) == []


def test_no_task_imports_another_task():
    """Shared machinery lives outside tasks/ (training.py, data/splits.py, features/): tasks stand alone."""
    def task_of(mod):
        parts = mod.split(".")
        return parts[2] if len(parts) > 2 and parts[1] == "tasks" else None

    offenders = sorted(f"{m} -> {t}" for m, targets in _import_graph().items() for t in targets
                       if task_of(m) and task_of(t) and task_of(m) != task_of(t))
    assert not offenders, offenders


def test_no_argparse_below_the_command_line():
    """Flags and parsers live in panderm/cli/ (the `panderm` command) and panderm/compat/ (the doors' dialects)."""
    lib = [p for p in (REPO / "src" / "panderm").rglob("*.py") if p.parent.name not in ("cli", "compat")]
    offenders = [f"{p.relative_to(REPO)}:{i}" for p in lib for i, line in enumerate(p.read_text().splitlines(), 1)
                 if re.search(r"^\s*(import argparse|from argparse import)|argparse\.Namespace", line)]
    assert len(lib) > 60 and not offenders, offenders


def test_no_source_file_over_500_lines():
    long = {str(p.relative_to(REPO)): n for p in CODE if (n := len(p.read_text().splitlines())) > 500}
    assert not long, long


FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*")


def test_the_flag_pattern():
    assert FLAG.findall("pass --overwrite or --out DIR; --root_path, not x--y or -v") == [
        "--overwrite", "--out", "--root_path"]


def test_no_flag_spelling_below_the_command_line():
    """Below cli/ and compat/ an error names its setting (`param=`), and each door spells its own flag."""
    lib = REPO / "src" / "panderm"
    found = {str(p.relative_to(lib)): FLAG.findall(p.read_text()) for p in lib.rglob("*.py")
             if p.parent.name not in ("cli", "compat")}
    assert not {f: flags for f, flags in found.items() if flags}, "name a `param=` the door renders instead"


#: docs/ARCHITECTURE.md's layers, top (0) to bottom; a module imports only its own layer and those below
LAYERS = {"__main__": 0, "cli": 0, "compat": 0, "api": 1, "demo": 1, "tasks": 2, "analysis": 3, "errors": 5}
SHARED = 4  # features, training, runtime, data, metrics, validation, report, models, ...


def _layer(module: str) -> int:
    parts = module.split(".")
    return 6 if len(parts) == 1 else LAYERS.get(parts[1], SHARED)


def test_layers_import_only_downward():
    assert _layer("panderm.cli.zeroshot") < _layer("panderm.tasks.zeroshot") < _layer("panderm.features.cache")
    upward = sorted(f"{m} -> {t}" for m, targets in _import_graph().items() for t in targets if _layer(t) < _layer(m))
    assert not upward, upward


def test_no_command_name_below_the_command_line():
    """The library does not know its command line: no `panderm <subcommand>` below cli/ and compat/, in code,
    messages or docstrings alike (a docstring points to the module or the docs instead)."""
    from panderm.cli import COMMANDS

    named = re.compile(r"panderm (%s)\b" % "|".join(re.escape(name) for name, _ in COMMANDS))
    assert named.search("see `panderm linear-probe`") and not named.search("panderm modelsx, panderm.models")
    lib = REPO / "src" / "panderm"
    offenders = [f"{p.relative_to(lib)}:{i}" for p in lib.rglob("*.py") if p.parent.name not in ("cli", "compat")
                 for i, line in enumerate(p.read_text().splitlines(), 1) if named.search(line)]
    assert not offenders, offenders


def _modules_the_parser_imports() -> set[str]:
    """Every module loaded by building the `panderm` parser (what `panderm --help` costs), in a fresh process."""
    import subprocess
    import sys

    code = "import sys; from panderm.cli import build_parser; build_parser(); print(' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    return set(out.stdout.split())


def test_building_the_parser_imports_no_heavy_library():
    """`panderm --help` stays fast: neither torch nor pandas, PIL, matplotlib, scipy or scikit-learn."""
    loaded = _modules_the_parser_imports()
    assert "panderm.cli.zeroshot" in loaded
    assert not {"torch", "pandas", "PIL", "matplotlib", "scipy", "sklearn"} & loaded


def _local_own_imports() -> dict[str, list[int]]:
    """module -> lines where a function imports one of panderm's modules (not under a try/except), below cli/
    and compat/."""
    src = REPO / "src"
    found: dict[str, list[int]] = {}
    for path in (src / "panderm").rglob("*.py"):
        rel = path.relative_to(src).with_suffix("")
        module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        if len(rel.parts) > 1 and rel.parts[1] in ("cli", "compat"):
            continue
        tree = ast.parse(path.read_text())
        parent = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            if not (isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("panderm"))):
                continue
            chain, up = [], parent.get(node)
            while up is not None:
                chain.append(up)
                up = parent.get(up)
            if any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) for n in chain) and \
                    not any(isinstance(n, ast.Try) for n in chain):
                found.setdefault(module, []).append(node.lineno)
    return found


def _loads_torch(module: str) -> bool:
    import subprocess
    import sys

    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    return out.stdout.strip() == "True"


def test_own_imports_at_the_module_top_below_the_command_line():
    """The dependency graph is read off the module tops. A function imports one of panderm's modules only where
    that keeps start-up cheap: in a module the parser loads (the test above), in a module that imports without
    torch (the CBM doors, `panderm audit`, the demo's and concepts' file steps start without it), in the package
    root (lazy attributes), or where a try/except chooses."""
    parser_loads = {m for m in _modules_the_parser_imports() if m.startswith("panderm.")} | {"panderm"}
    lazy = {m: lines for m, lines in _local_own_imports().items() if m not in parser_loads}
    assert "panderm.tasks.concepts.explain_files" in lazy  # the scan sees function-local imports
    offenders = [f"{m}:{lines}" for m, lines in sorted(lazy.items()) if _loads_torch(m)]
    assert not offenders, offenders
