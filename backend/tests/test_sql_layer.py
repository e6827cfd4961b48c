"""SQL lives in ``backend/app/db/``: no module of ``backend/app`` or ``src`` elsewhere builds a statement
(``select``, ``text``, ``insert``, ``update``, ``delete`` from SQLAlchemy). Read by syntax tree, so a name in a
comment or a string does not count, and ``import sqlalchemy as sa; sa.select(...)`` does."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("backend/app", "src")
SQL_HOME = "backend/app/db/"
STATEMENTS = frozenset({"select", "text", "insert", "update", "delete"})

# (file, name): uses that are not queries, or that another change moves
ALLOWED = {
    # the predicate of a partial unique index: part of the table's declaration, not a query
    ("backend/app/models/portfolio.py", "text"),
}


def sql_uses(tree: ast.AST) -> set[tuple[str, int]]:
    """``(name, line)`` of every statement builder imported from SQLAlchemy or reached through its module."""
    found: set[tuple[str, int]] = set()
    modules: set[str] = set()  # local names bound to sqlalchemy (sub)modules
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "sqlalchemy":
            for alias in node.names:
                if alias.name in STATEMENTS:
                    found.add((alias.name, node.lineno))
                else:
                    modules.add(alias.asname or alias.name)  # e.g. ``from sqlalchemy import sql`` (harmless if a type)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "sqlalchemy":
                    modules.add(alias.asname or alias.name.split(".")[0])
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in STATEMENTS:
            base = node.value
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name) and base.id in modules:
                found.add((node.attr, node.lineno))
    return found


def test_sql_uses_finds_every_form() -> None:
    source = (
        "import sqlalchemy as sa\n"
        "from sqlalchemy import select, func\n"
        "from sqlalchemy.dialects.postgresql import insert\n"
        "from sqlalchemy import sql\n"
        "sa.update(t)\n"
        "sql.expression.delete(t)\n"
        "# select in a comment\n"
        "x = 'text(1)'\n"
    )
    assert {name for name, _ in sql_uses(ast.parse(source))} == {"select", "insert", "update", "delete"}


def test_no_sql_outside_backend_app_db() -> None:
    offences = []
    for folder in SCANNED:
        for path in sorted((ROOT / folder).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if relative.startswith(SQL_HOME):
                continue
            for name, line in sorted(sql_uses(ast.parse(path.read_text(encoding="utf-8")))):
                if (relative, name) not in ALLOWED:
                    offences.append(f"{relative}:{line}: {name}")
    assert not offences, "SQL outside backend/app/db/ (move it to a repository or backend/app/db/queries/):\n" + (
        "\n".join(offences)
    )
