"""The ground floor: value types, enums and rules every room of ``src/`` uses.

Nothing here imports from above (only the standard library and ``src.exceptions``). Import each
name from its module (``from src.domain.orders import Side``); this package re-exports nothing.
"""
