"""One error type for everything a user can fix: the CLI prints it as one line and exits 2."""


class UserError(Exception):
    """A problem with the user's input; the message names the problem and the fix."""

    exit_code = 2
