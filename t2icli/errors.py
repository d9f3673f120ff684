"""The one base class of every error a user can fix (bad flag, path, data, checkpoint, export); the CLI catches it once.

Each module raises its own subclass (DataError, RunError, ExportError, MetricError, ...) so a caller can tell them
apart; the message always names the flag or path at fault. `t2i` turns any of them into a one-line message and
exit status 1 (2 for a ConfigError, a bad option), without a traceback (t2icli/cli/__init__.py).
"""

__all__ = ["T2IError", "ConfigError"]


class T2IError(ValueError):
    """A problem the user must fix; the message names the flag or path (a ValueError, for callers that catch those)."""


class ConfigError(T2IError):
    """A bad option value or combination of options (the message names the flag): exit status 2 on the command
    line, as click's own usage errors."""
