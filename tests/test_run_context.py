"""The engine, its interpreter and its command manager do not import each other: the interpreter
and the command manager act on the run through the RunContext interface, which the engine
implements (pectus/pcode/context.py)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import pectus.pcode
from conftest import make_unit
from pectus.pcode.context import RunContext
from pectus.pcode.engine import Engine

PCODE = Path(pectus.pcode.__file__).parent


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, also under ``if TYPE_CHECKING:`` and inside functions."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
        elif isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
    return modules


@pytest.mark.parametrize("module", ["interpreter.py", "commands.py"])
def test_the_interpreter_and_the_command_manager_do_not_import_the_engine(module: str) -> None:
    """Before the refactor both imported pectus.pcode.engine (and the engine imported them)."""
    assert "pectus.pcode.engine" not in imported_modules(PCODE / module)


def test_the_engine_implements_the_run_context() -> None:
    """Before the refactor there was no RunContext: the interpreter took the engine whole."""
    engine = Engine(make_unit())
    methods = {name for name, member in vars(RunContext).items()
               if inspect.isfunction(member) and not name.startswith("_")}
    attributes = set(RunContext.__annotations__)
    assert methods and attributes
    for name in sorted(methods):
        assert callable(getattr(engine, name, None)), f"Engine has no method {name}"
        assert (inspect.signature(getattr(Engine, name)).parameters.keys()
                == inspect.signature(getattr(RunContext, name)).parameters.keys()), name
    for name in sorted(attributes):
        assert hasattr(engine, name), f"Engine has no attribute {name}"
