"""advlab's modules form no import cycle: each one imports on its own, first, in a fresh interpreter.

A cycle patched by a lazy import inside a function passes this only as long as nobody moves the
import; so the test also reads every module's own imports and checks the graph has no cycle.
"""

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import advlab

PACKAGE = Path(advlab.__file__).parent
MODULES = sorted(m.name for m in pkgutil.walk_packages([str(PACKAGE)], prefix="advlab."))


# One fresh interpreter imports the heavy third-party packages once, then forks a child per advlab module:
# in each child that module is the first advlab module imported, at the cost of a fork, not of torch's import.
FORKING_IMPORTER = """
import importlib, os, sys
import hydra, matplotlib, numpy, omegaconf, pytorch_lightning, torch, torchvision  # noqa: F401
failed = []
for name in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module(name)
        except BaseException as error:
            print(f"{name}: {type(error).__name__}: {error}", flush=True)
            os._exit(1)
        os._exit(0)
    if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) != 0:
        failed.append(name)
sys.exit(1 if failed else 0)
"""


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
@pytest.mark.slow  # a fresh interpreter (subprocess)
def test_every_module_imports_first_in_a_fresh_interpreter():
    proc = subprocess.run([sys.executable, "-c", FORKING_IMPORTER, *MODULES], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]


def _imports(name: str) -> set[str]:
    """The advlab modules `name` imports anywhere in its source (top level or inside functions)."""
    path = PACKAGE.joinpath(*name.split(".")[1:])
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("advlab"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("advlab"))
    return {m for m in found if m in MODULES and m != name}


def test_the_import_graph_has_no_cycle():
    graph = {m: _imports(m) for m in MODULES}
    # A package's __init__ re-exporting its submodules is not a cycle of the code: drop those edges.
    graph = {m: {d for d in deps if not d.startswith(m + ".")} for m, deps in graph.items()}
    state, cycle = {}, []

    def visit(node, path):
        state[node] = "open"
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                cycle.append(" -> ".join(path[path.index(dep):] + [dep]) if dep in path else f"{node} -> {dep}")
            elif dep not in state:
                visit(dep, path + [dep])
        state[node] = "done"

    for module in MODULES:
        if module not in state:
            visit(module, [module])
    assert not cycle, "import cycles:\n" + "\n".join(cycle)
