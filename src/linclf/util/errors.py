"""The one exception type users see: its message is printed as a single line by the CLI."""


class LinclfError(ValueError):
    """A problem the user can fix (bad input, missing data, bad file); never a bug. A ValueError, so
    that the scikit-learn estimators raise the exception scikit-learn expects of bad input."""
