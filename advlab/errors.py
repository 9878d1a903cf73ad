"""Errors the user can fix, told apart from bugs.

A UserError is a problem in what the user gave advlab: a config value, a missing or
unreadable file, an unknown name. `python -m advlab` (and the `advlab` command) prints it
as one line on stderr, `advlab: error: <message>`, and exits with status 2, without a
traceback; with the environment variable ADVLAB_DEBUG=1 it shows the traceback as well.
Any other exception is a bug and keeps its traceback.
"""


class UserError(ValueError):
    """A problem the user can fix; the message names the key or file and what is allowed.

    A ValueError, so code and tests that catch ValueError keep working."""


class UserFileError(UserError, FileNotFoundError):
    """A file or folder the user named is missing, or not what it should be (also a FileNotFoundError)."""
