"""Loading a UOD file: run it as a module, call its ``create()``, return the definition.

Invariant: whatever goes wrong - a missing file, a syntax error, an exception raised while the
file runs, a bad builder call - :func:`load_uod` raises :class:`UodError` whose problems name
the UOD file and the line to fix:

* a syntax error: its line;
* an exception: the deepest line *of the UOD file* in the traceback (not a line inside pectus);
* validation problems: the line of each builder call concerned, as recorded by the builder.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import re
import sys
import traceback
from pathlib import Path

from pectus.uod.definition import UnitOperationDefinition, UodError

# Each load gets its own module, so loading a changed file (or two units) never mixes them up.
_load_counter = itertools.count(1)


def load_uod(path: str | os.PathLike[str]) -> UnitOperationDefinition:
    """Execute the UOD file at ``path`` and return ``create()``'s validated definition."""
    path = Path(path).resolve()
    header = f"Cannot load UOD {path}"
    if not path.is_file():
        raise UodError([f"{path}: no such file"], header)
    stem = re.sub(r"\W", "_", path.stem)
    module_name = f"pectus_uod_{stem}_{next(_load_counter)}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None  # a .py path always has a source loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling in the UOD look the module up
    try:
        spec.loader.exec_module(module)
        create = getattr(module, "create", None)
        if not callable(create):
            raise UodError([f"{path.name}: the file defines no create() function; a UOD defines "
                            "create() returning UodBuilder()...build()"], header)
        definition = create()
        if not isinstance(definition, UnitOperationDefinition):
            raise UodError([f"{path.name}: create() returned {type(definition).__name__}, not the "
                            "UnitOperationDefinition of UodBuilder()...build()"], header)
    except UodError as error:
        del sys.modules[module_name]
        raise UodError(error.problems, header) from None
    except SyntaxError as error:
        del sys.modules[module_name]
        if error.filename == str(path):
            raise UodError([f"{path.name}:{error.lineno}: syntax error: {error.msg}"], header) from error
        raise UodError([_locate(error, path)], header) from error
    except Exception as error:
        del sys.modules[module_name]
        raise UodError([_locate(error, path)], header) from error
    return definition


def _locate(error: BaseException, path: Path) -> str:
    """``file.py:LINE: Type: message (in: code)`` at the deepest traceback line in ``path``."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == str(path)]
    what = f"{type(error).__name__}: {error}"
    if not frames:
        return f"{path.name}: {what}"
    frame = frames[-1]
    return f"{path.name}:{frame.lineno}: {what}" + (f" (in: {frame.line})" if frame.line else "")
