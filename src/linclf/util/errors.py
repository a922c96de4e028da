"""The one exception type users see (its message is printed as a single line by the CLI), and
short_repr, how its messages quote a value."""
import reprlib


class LinclfError(ValueError):
    """A problem the user can fix (bad input, missing data, bad file); never a bug. A ValueError, so
    that the scikit-learn estimators raise the exception scikit-learn expects of bad input."""


class LinclfWarning(UserWarning):
    """Something the user should know that does not stop the work (a class the training split lacks).
    The CLI prints it as one line, "warning: ..."; from Python it is an ordinary UserWarning."""


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxtuple, _SHORT.maxdict, _SHORT.maxset = 2, 4, 4, 4, 4
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlong = 40, 40, 40


def short_repr(value, limit=60):
    """repr(value) for an error message, at most `limit` characters, without ever formatting the
    whole of a big or deeply nested value (reprlib stops after a few items and levels)."""
    try:
        text = _SHORT.repr(value)
    except Exception:  # a value whose repr fails is still worth naming  # pragma: no cover
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit - 3] + "..."
