"""The one exception type a user's mistake becomes.

The library raises `CharlstmError` with a message written for a person (what is wrong
and what to do); `cli.py` turns it into one line on stderr and a non-zero exit. Anything
else that escapes is a bug, and the CLI says so.
"""


class CharlstmError(Exception):
    """A mistake in the user's input, files or options, explained in one line."""
