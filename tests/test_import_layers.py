"""The rooms of ``src/`` stack in floors: a module imports only from its own floor or below, and no
modules or packages import each other in a circle.

Every import counts: at the top of a file, inside a function and under ``TYPE_CHECKING``. When this
test fails, the thing imported from above is in the wrong room; move it down (to ``src/domain`` if
every room needs it) rather than adding an exception here.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# Floor of each package of src/, lowest first. A package may import its own floor and any below.
LEVELS: dict[str, int] = {
    # Ground floor: value types, enums, market rules, events and the typed errors; stdlib only.
    "exceptions": 0,
    "domain": 0,
    "utils": 1,  # logging
    "config": 2,  # settings and run-time rules
    "api": 3,  # the exchange port: Upbit client, paper exchange
    "risk": 3,  # risk rules, sizing and the position store port
    "ai": 4,  # the adviser (its prompt shows the orderbook of api)
    "position": 4,  # position bookkeeping on top of the risk store
    "trading": 4,  # orders, indicators, liquidity, the trading service (on the exchange port)
    "data": 5,  # market data collection and replay (the collector's alternative data uses ai)
    "strategy": 5,  # the strategy contract, the bundled strategies and the user strategy loader
    "backtesting": 6,  # strategies, the backtester, the quick filter (indicators of trading, ai strategy)
    "trading.pipeline": 7,  # the trading cycle: uses every room below
    "research": 7,  # the research workbench: search, walk-forward, robustness, AI value (runs backtests)
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {_module_name(path): path for path in sorted(SRC.rglob("*.py"))}


def _package(module: str) -> str:
    parts = module.split(".")[1:]
    if parts[:2] == ["trading", "pipeline"]:
        return "trading.pipeline"
    return parts[0] if parts else ""


def _imports(module: str) -> set[str]:
    """The modules of src/ that ``module`` imports anywhere in its file."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in MODULES else base)
    return {name for name in found if name in MODULES and name != module}


GRAPH: dict[str, set[str]] = {module: _imports(module) for module in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_package_has_a_floor() -> None:
    packages = {_package(module) for module in MODULES} - {""}
    assert packages <= set(LEVELS), f"give these packages a floor in LEVELS: {sorted(packages - set(LEVELS))}"


def test_no_import_goes_up_a_floor() -> None:
    upward = [
        f"{module} (floor {LEVELS[_package(module)]}) imports {target} (floor {LEVELS[_package(target)]})"
        for module, targets in GRAPH.items()
        if _package(module)
        for target in sorted(targets)
        if _package(target) and LEVELS[_package(target)] > LEVELS[_package(module)]
    ]
    assert not upward, "imports that go up:\n" + "\n".join(upward)


def test_the_ground_floor_imports_only_the_ground_floor() -> None:
    for module, targets in GRAPH.items():
        if _package(module) == "domain":
            assert all(_package(target) in ("domain", "exceptions") for target in targets), (module, targets)


def test_the_ground_floor_needs_only_the_standard_library() -> None:
    for module, path in MODULES.items():
        if _package(module) != "domain":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            for name in names:
                top = name.partition(".")[0]
                assert top == "src" or top in sys.stdlib_module_names, f"{module} imports {name}"


def test_no_module_cycle() -> None:
    assert not _cycles(GRAPH), f"modules that import each other in a circle: {_cycles(GRAPH)}"


def test_no_package_cycle() -> None:
    packages: dict[str, set[str]] = {}
    for module, targets in GRAPH.items():
        packages.setdefault(_package(module), set()).update(
            _package(target) for target in targets if _package(target) != _package(module)
        )
    assert not _cycles(packages), f"packages that import each other in a circle: {_cycles(packages)}"
