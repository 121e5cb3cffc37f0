"""The one exception type for mistakes a user can fix.

A UserError carries a single line that names the file, row or key at fault and
what to do about it. The CLI prints it without a traceback and exits with 2;
everything else (a bug) keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input, config or environment, stated in one line."""

    exit_code = 2
