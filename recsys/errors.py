"""Errors raised at the project's public entry points.

Every message says what was wrong (with the observed value) and what to do about it.
"""


class RecsysError(Exception):
    """Base class of every error this project raises on purpose."""


class DataValidationError(RecsysError, ValueError):
    """Input data does not match its canonical schema (file, column and an example are named)."""


class LeakageError(RecsysError, ValueError):
    """A split would let test information reach training."""


class NotFittedError(RecsysError, RuntimeError):
    """A model or id map was used before ``fit`` was called."""


class UnknownIdError(RecsysError, KeyError):
    """An external id is not in the fitted id map."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return str(self.args[0]) if self.args else ""


class ConfigError(RecsysError, ValueError):
    """A configuration value is out of its allowed range."""


class RequestTooLargeError(DataValidationError):
    """A serving request asks for more work than one request may (HTTP 413 at the server)."""


class RequestDeadlineError(RecsysError, TimeoutError):
    """A serving request ran past its deadline and was stopped (HTTP 503 at the server)."""


class FitStopped(RecsysError):
    """A fit running beside other work ended early because its caller no longer wants it (the
    other work failed, or Ctrl-C): it is never the error a user sees."""
