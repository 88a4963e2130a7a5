"""The CUDA paths import their kernels lazily, inside functions that only run on a GPU; a
renamed module or function would only fail there. Every such import must resolve on any
machine that has Triton."""

import ast
import importlib
from pathlib import Path

import pytest

CORE = Path(__file__).parents[3] / "src" / "decoptim" / "core"


def lazy_kernel_imports() -> list[tuple[str, str, str]]:
    """(file, module, name) for every relative import of a kernel module in decoptim.core
    (the kernel table's lazy imports among them)."""
    found = []
    for path in sorted(CORE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level and node.module:
                package = ".".join(path.relative_to(CORE.parent.parent).with_suffix("").parts)
                base = package.rsplit(".", node.level)[0]
                module = f"{base}.{node.module}"
                if module.startswith("decoptim.core.kernels."):
                    found += [(path.name, module, alias.name) for alias in node.names]
    return found


def test_there_are_lazy_kernel_imports_to_check():
    imports = lazy_kernel_imports()
    modules = {module for _, module, _ in imports}
    assert {"decoptim.core.kernels.top_p", "decoptim.core.kernels.bok_topm"} <= modules
    from_table = {name for where, _, name in imports if where == "table.py"}
    assert {"tsallis_probs", "top_p_probs", "top_p_sample", "bok_prob_probs"} <= from_table


@pytest.mark.parametrize(("where", "module", "name"), lazy_kernel_imports())
def test_each_lazy_kernel_import_resolves(where, module, name):
    pytest.importorskip("triton")
    assert hasattr(importlib.import_module(module), name), f"{where}: {module}.{name}"
