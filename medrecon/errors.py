"""Errors a user can act on. The CLI prints them as one line; library callers catch them."""


class UserError(Exception):
    """Bad input from the user: a file, an option or a value. The message names the problem."""


class DataError(UserError):
    """A file exists but its content is unusable (wrong format, truncated, inconsistent)."""
