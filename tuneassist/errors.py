"""One error type for everything a user can fix: the CLI prints it as one line and exits 2.

`printable` is the one escape for text that reaches a terminal from files, stores or arguments
(profile names, paths, run errors): an ESC, a BEL, a newline or a bidi override in such text is
shown as `\\x1b`, `\\x07`, `\\n`, `\\u202e`, never acted on by the terminal.
"""


class UserError(Exception):
    """A problem with the user's input; the message names the problem and the fix."""

    exit_code = 2


def printable(text: object, keep: str = "") -> str:
    """`text` with every non-printable character (control characters, line and paragraph separators,
    format characters such as bidi overrides) escaped as Python would write it, except those in `keep`
    (e.g. "\n\t" for a file shown whole); the rest unchanged."""
    s = str(text)
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() or c in keep else ascii(c)[1:-1] for c in s)
