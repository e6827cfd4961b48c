"""Start-up shared by every entry point: settings (or one clear line and exit 2), then logging.

Whatever an entry point prints or lets escape goes through the log redactor first."""

from __future__ import annotations

import sys

from src.config.settings import Settings, get_settings
from src.config.unknown_keys import unknown_key_warnings
from src.exceptions import ConfigurationError
from src.utils.logger import configure_logging, install_excepthooks, redactor

EXIT_CONFIGURATION_ERROR = 2

_warned = False


def warn_about_unknown_keys() -> None:
    """Once per process, a ``warning:`` line on stderr for each key that looks like a setting but is none
    (``unknown_keys.unknown_key_warnings``), so a typo never silently leaves a default such as the stop-loss."""
    global _warned
    if _warned:
        return
    _warned = True
    for warning in unknown_key_warnings():
        print(f"warning: {warning}", file=sys.stderr)


def load_settings_or_exit() -> Settings:
    install_excepthooks()
    warn_about_unknown_keys()  # first: a typo may be why a value is missing or wrong
    try:
        settings = get_settings()
    except ConfigurationError as exc:
        print(f"error: {redactor.scrub_text(exc.message)}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIGURATION_ERROR) from None
    configure_logging(
        level=settings.observability.log_level,
        log_format=settings.observability.log_format.value,
        secrets=settings.secret_values(),
    )
    return settings
