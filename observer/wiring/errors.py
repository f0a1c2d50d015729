"""The CLI's user-facing failures: `pd-observer: <one line>` on stderr (or one JSON error log
line once `serve` logs JSON), and the exit code (DESIGN §4: 2 for usage and configuration
errors, 1 for runtime failures). `observer.config.ConfigError` is the other usage error."""

from __future__ import annotations


class CliError(Exception):
    """A runtime failure the user can act on: printed as one line, exit code 1."""

    exit_code = 1


class UsageError(CliError):
    """A bad command-line value found after parsing (e.g. an output path): exit code 2."""

    exit_code = 2
