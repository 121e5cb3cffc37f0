"""The one exception type for mistakes a user can fix.

A UserError carries a single line that names the file, row or key at fault and
what to do about it. The CLI prints it without a traceback and exits with 2;
everything else (a bug) keeps its traceback. `raise_write_error` makes what the
machine refuses to a writer (a full disk, a permission) name the user's path.
"""

import errno
import os
import re
from typing import NoReturn


class UserError(Exception):
    """A problem with the user's input, config or environment, stated in one line."""

    exit_code = 2


FIXABLE_WRITE_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS})
"""What the machine refuses to a writer that the same command can get past once the user frees space or fixes a
permission (the CLI reports more as the user's to fix: cli.REFUSALS)."""


def raise_write_error(exc: BaseException, dest, temporary) -> NoReturn:
    """Raise `exc`, a failed write, as an OSError naming `dest`, the user's path, instead of `temporary`, ours, where
    it is such an error; as it was otherwise. For an `except` block, after it has removed the temporary.

    The writers stage their output beside it (`temporary`: a folder, or a file's `.partial`) and rename it when
    complete. What the machine refuses there (a full disk, a permission) is the user's to fix, and the CLI reports
    such an OSError in one line; it should name the path they chose. The error comes without a file name from a
    failed write, naming the temporary from a failed open, or from safetensors' Rust writer as a SafetensorError
    whose text alone carries the OS error ("... Os { code: 28, kind: StorageFull, ... }").
    """
    if isinstance(exc, OSError):
        if exc.errno is None or (exc.filename is not None and not str(exc.filename).startswith(str(temporary))):
            raise exc
        code = exc.errno
    elif type(exc).__name__ == "SafetensorError" and (m := re.search(r"\bOs \{ code: (\d+)", str(exc))):
        code = int(m.group(1))
    else:
        raise exc
    raise OSError(code, os.strerror(code) if code in errno.errorcode else str(exc), str(dest)) from exc
