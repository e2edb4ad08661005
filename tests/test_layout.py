"""The package's shape, as STYLE.md and the README describe it: one home per concept, the command line light,
no import cycles, no long functions, every module named in the README's layout."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "asr"
HEAVY = ("torch", "torchaudio", "onnxruntime", "starlette", "uvicorn", "prometheus_client", "multipart",
         "websockets", "httptools", "uvloop", "sentencepiece", "matplotlib")   # torch and the server's libraries


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imported(module: str, path: Path, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The dotted names an import statement may load: the module, and each name as a submodule of it."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = module.split(".")
    if node.level:
        base = base if path.name == "__init__.py" else base[:-1]
        base = base[:len(base) - node.level + 1]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    return [target, *(f"{target}.{a.name}" for a in node.names)]


def import_graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports anywhere in its code: at the top, in functions (lazy imports
    count), under TYPE_CHECKING; `import a.b.c` counts as an import of the longest of them that is a module."""
    graph = {}
    for module, path in MODULES.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for name in _imported(module, path, node):
                    parts = name.split(".")
                    while parts and ".".join(parts) not in MODULES:
                        parts.pop()
                    if parts and ".".join(parts) != module:
                        edges.add(".".join(parts))
        graph[module] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each a set of modules in a cycle."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_lazy_imports_included():
    graph = import_graph()
    assert "asr.cli.decode" in graph and "asr.transcribe" in graph["asr.cli.args"]     # lazy imports are seen
    assert cycles(graph) == []
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]  # the finder finds them


def test_no_function_over_100_lines():
    long = [f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path in MODULES.values() for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 100]
    assert long == []


def test_no_two_top_level_modules_share_a_name_prefix():
    """A family of files sharing a prefix (serve_*, commands_*) is a subpackage; the core stays flat."""
    stems = [p.stem for p in PACKAGE.glob("*.py") if not p.stem.startswith("__")]
    prefixes = [s.split("_")[0] for s in stems]
    shared = sorted({s for s in stems if prefixes.count(s.split("_")[0]) > 1})
    assert shared == []
    assert not [s for s in stems for t in stems if s != t and t.startswith(s + "_")]


def test_every_module_is_named_once_in_the_readme_layout():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"^## Layout\n.*?^```\n(.*?)^```", readme, re.S | re.M).group(1)
    named = [line.split()[0] for line in block.splitlines() if line.startswith("asr/")]
    files = sorted(str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*") if p.suffix in (".py", ".html", ".cpp"))
    assert sorted(named) == files, (sorted(set(files) - set(named)), sorted(set(named) - set(files)))
    assert len(named) == len(set(named)), [n for n in named if named.count(n) > 1]


def test_each_subpackage_index_names_its_modules():
    for package in sorted({p.parent for p in PACKAGE.rglob("__init__.py")} - {PACKAGE}):
        doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text(encoding="utf-8"))) or ""
        missing = [p.name for p in package.iterdir() if p.suffix in (".py", ".html") and not p.name.startswith("__")
                   and p.name not in doc]
        assert missing == [], f"{package.relative_to(ROOT)}/__init__.py's docstring does not name {missing}"


def _loaded_by(code: str) -> list[str]:
    """The heavy modules a fresh Python has loaded after running `code` (which may exit)."""
    script = (f"import sys\ntry:\n    {code}\nexcept SystemExit:\n    pass\n"
              f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    return eval(run.stdout.strip().splitlines()[-1])


def test_help_and_the_parser_import_neither_torch_nor_the_server():
    assert _loaded_by("from asr.cli import build_parser; build_parser().format_help()") == []
    assert _loaded_by("from asr.cli import main; main(['--help'])") == []
    assert _loaded_by("from asr.cli import main; main(['serve', '--help'])") == []     # ServeOptions' defaults
    assert _loaded_by("from asr.cli import main; main(['bench', 'serve', '--help'])") == []
    assert "torch" in _loaded_by("import asr.serve.app")                                # the check can fail


def test_every_way_of_starting_the_command_line_is_the_same_parser():
    helps = {}
    for way in (["-m", "asr", "train"], ["-m", "asr.cli", "train"], ["-m", "asr.train"]):
        run = subprocess.run([sys.executable, *way, "--help"], capture_output=True, text=True, cwd=ROOT)
        assert run.returncode == 0, run.stderr[-2000:]
        helps[" ".join(way)] = run.stdout.split("\n", 1)[1]          # after the usage line's program name
    assert len(set(helps.values())) == 1, helps
    assert "key=value" in helps["-m asr.train"] and "--config" in helps["-m asr.train"]


def test_under_ci_a_skipped_test_fails_the_run_unless_marked(tmp_path):
    """tests/ci_skips.py, on a throwaway suite: a skip is fine locally, fails under CI=true, and a test marked
    skip_ok_in_ci may skip there."""
    import os

    (tmp_path / "conftest.py").write_text('pytest_plugins = ["ci_skips"]\n')
    (tmp_path / "test_x.py").write_text(
        "import pytest\n\n"
        "def test_runs():\n    assert True\n\n"
        "def test_skips():\n    pytest.skip('a tool is missing')\n")
    (tmp_path / "test_y.py").write_text(
        "import pytest\n\n"
        "@pytest.mark.skip_ok_in_ci\ndef test_may_skip():\n    pytest.skip('optional here')\n")

    def run(ci: str | None, *files: str) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_XDIST_WORKER", "PYTEST_ADDOPTS")}
        env.update(PYTHONPATH=str(ROOT / "tests"), **({"CI": ci} if ci else {}))
        return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W",
                               "ignore::pytest.PytestUnknownMarkWarning", *files], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)

    assert run(None, "test_x.py").returncode == 0
    failed = run("true", "test_x.py")
    assert failed.returncode == 1, failed.stdout
    assert "CI=true: 1 test(s) skipped without skip_ok_in_ci, which fails the run: test_x.py::test_skips" \
        in failed.stdout
    assert run("true", "test_y.py").returncode == 0
