"""Exceptions of the ranking library. ``UserError`` subclasses are shown to users as one line."""


class UserError(Exception):
    """An error caused by input or configuration; the CLI prints it as one line and exits 2."""


class UnknownIdError(UserError, KeyError):
    """An external id is not in a frozen id map (raised only in strict mode)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class NotFittedError(UserError):
    """A model was asked to score before it was fitted or loaded."""
