"""The house rules a reader relies on: small modules, short functions, every package saying what it is for."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "embedder"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 50


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_module_is_over_400_lines():
    long = {str(path.relative_to(PACKAGE)): n for path in modules()
            if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}, f"split these modules: {long}"


def test_no_function_is_over_50_lines():
    long = []
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({lines} lines)")
    assert long == [], f"split these functions: {long}"


def test_every_package_says_what_it_does_and_what_it_may_import():
    for init in sorted(PACKAGE.rglob("__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert len(doc) > 80, f"{init.relative_to(PACKAGE)} needs a docstring saying what the stage does"
        if init.parent != PACKAGE:
            assert "May import" in doc, f"{init.relative_to(PACKAGE)} must say what it may import"
