"""The package's layers import only downwards: a module never imports a layer above its own."""
import ast
from pathlib import Path

import pytest

import linclf

ROOT = Path(linclf.__file__).parent
# lowest first; layers on one line do not import each other
ORDER = [{"util"}, {"config_files"}, {"config"}, {"data"}, {"features", "training"}, {"evaluation"}, {"experiments"},
         {"app", "estimators"}, {"cli_options"}, {"cli"}, {"__main__"}]
LEVEL = {name: level for level, names in enumerate(ORDER) for name in names}


def layer(path):
    parts = path.relative_to(ROOT).parts
    return parts[0] if len(parts) > 1 else Path(parts[0]).stem


def imported_layers(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "linclf":
            parts = node.module.split(".")
            yield from ([parts[1]] if len(parts) > 1 else [alias.name for alias in node.names])


@pytest.mark.parametrize("path", sorted(p for p in ROOT.rglob("*.py") if p.name != "__init__.py" or p.parent != ROOT),
                         ids=lambda p: p.relative_to(ROOT).as_posix())
def test_imports_run_downwards(path):
    here = layer(path)
    for target in imported_layers(path):
        if target in LEVEL and target != here:
            assert LEVEL[target] < LEVEL[here], f"{path.relative_to(ROOT)} ({here}) imports {target}, a layer above"
