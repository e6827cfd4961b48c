"""Command-line tools over src/."""
