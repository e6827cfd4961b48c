"""Start-up shared by every entry point: settings (or one clear line and exit 2), then logging.

Whatever an entry point prints or lets escape goes through the log redactor first."""

from __future__ import annotations

import sys

from src.config.settings import Settings, get_settings
from src.exceptions import ConfigurationError
from src.utils.logger import configure_logging, install_excepthooks, redactor

EXIT_CONFIGURATION_ERROR = 2


def load_settings_or_exit() -> Settings:
    install_excepthooks()
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
