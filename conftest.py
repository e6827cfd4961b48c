"""Root conftest: shared fixture plugins for tests/ and backend/tests/ (pytest reads pytest_plugins only here)."""

pytest_plugins = [
    "tests.support.database",
    "tests.fakes.telegram_fixtures",
    "tests.fakes.fixtures",
    "tests.fakes.openai_fixtures",
]
