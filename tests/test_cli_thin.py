"""cli.py only parses and delegates (issue 17): under 350 lines, and every command body is its docstring, lazy imports,
`o = build_options(...)` and `raise typer.Exit(<stage>_command(...))`; no branch, loop or print of its own."""
from __future__ import annotations

import ast
from pathlib import Path

CLI = Path(__file__).resolve().parents[1] / "cli.py"
ALLOWED = (ast.ImportFrom, ast.Import, ast.Raise, ast.Assign, ast.Expr)


def _commands() -> list[ast.FunctionDef]:
    tree = ast.parse(CLI.read_text())
    return [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.decorator_list and n.name != "_main"]


def test_cli_is_under_350_lines():
    assert len(CLI.read_text().splitlines()) < 350


def test_every_command_body_only_delegates():
    commands = _commands()
    assert len(commands) >= 28, [c.name for c in commands]
    for fn in commands:
        body = fn.body
        assert isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant), f"{fn.name}: no docstring"
        for st in body[1:]:
            assert isinstance(st, ALLOWED), f"{fn.name}: {type(st).__name__} at line {st.lineno}"
            if isinstance(st, ast.Expr):
                raise AssertionError(f"{fn.name}: a bare expression at line {st.lineno} (logic belongs to the stage)")
            if isinstance(st, ast.Assign):
                call = st.value
                assert isinstance(call, ast.Call) and getattr(call.func, "id", "") == "build_options", \
                    f"{fn.name}: line {st.lineno} computes more than its options"
        last = body[-1]
        assert isinstance(last, ast.Raise) and isinstance(last.exc, ast.Call) and \
            ast.unparse(last.exc.func) == "typer.Exit", f"{fn.name}: does not end by exiting with a stage's status"
        assert isinstance(last.exc.args[0], ast.Call) and ast.unparse(last.exc.args[0].func).endswith(("_command",
                                                                                                       "_cli")), \
            f"{fn.name}: exits with {ast.unparse(last.exc.args[0])}, not a stage's command body"
