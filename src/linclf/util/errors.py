"""The one exception type users see: its message is printed as a single line by the CLI."""


class LinclfError(Exception):
    """A problem the user can fix (bad input, missing data, bad file); never a bug."""
