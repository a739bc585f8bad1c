"""Errors a user can act on. The CLI prints them as one line; library callers catch them."""


class UserError(Exception):
    """Bad input from the user: a file, an option or a value. The message names the problem."""


class DataError(UserError):
    """A file exists but its content is unusable (wrong format, truncated, inconsistent)."""


class Interrupted(UserError):
    """SIGINT or SIGTERM stopped a long run after it saved what a resume needs; the message says
    where. The CLI prints it as one line and exits 130, like an interrupt."""
