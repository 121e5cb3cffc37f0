"""The one exception type for mistakes a user can fix.

A UserError carries a single line that names the file, row or key at fault and
what to do about it. The CLI prints it without a traceback and exits with 2;
everything else (a bug) keeps its traceback. `raise_write_error` makes what the
machine refuses to a writer (a full disk, a permission) name the user's path.
"""

import contextvars
import errno
import os
import re
from contextlib import contextmanager
from typing import Any, Iterator, NoReturn


class UserError(Exception):
    """A problem with the user's input, config or environment, stated in one line."""

    exit_code = 2


# Whether the call came through the command line, which is how advice names a setting: `--output.overwrite true` there,
# `overrides={'output.overwrite': True}` to a Python caller of train, plan or lr_find (a flag with two dashes and a
# lower-case true is nothing a Python user can type). A context variable, so that threads (the demo's) start as Python.
_COMMAND_LINE: contextvars.ContextVar[bool] = contextvars.ContextVar("taskembed_command_line", default=False)


@contextmanager
def command_line() -> Iterator[None]:
    """The body's advice names settings as command-line flags (the CLI runs each command inside it)."""
    token = _COMMAND_LINE.set(True)
    try:
        yield
    finally:
        _COMMAND_LINE.reset(token)


def on_command_line() -> bool:
    return _COMMAND_LINE.get()


def _flag_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    return repr(text) if not text or any(c.isspace() for c in text) else text


def setting(values: dict[str, Any], resume: bool = False) -> str:
    """How the caller sets these config keys (and asks to resume), for the advice in a message: `--resume
    --output.overwrite true` on the command line, `resume=True, overrides={'output.overwrite': True}` in Python."""
    if on_command_line():
        return " ".join(([resume_option()] if resume else []) + [f"--{key} {_flag_value(value)}" for key, value in values.items()])
    return ", ".join(([resume_option()] if resume else []) + ([f"overrides={values!r}"] if values else []))


_NO_VALUE = object()


def option(flag: str, value: Any = _NO_VALUE) -> str:
    """A command's own option as the caller gives it: `--text-column review` on the command line, `text_column='review'`
    to the command's Python function (evaluate, embed_file), which takes it as that keyword."""
    if on_command_line():
        return flag if value is _NO_VALUE else f"{flag} {value}"
    name = flag.lstrip("-").replace("-", "_")
    return f"{name}=" if value is _NO_VALUE else f"{name}={value!r}"


def key_name(key: str) -> str:
    """A config key as the caller names it: `--data.source` on the command line, `data.source` in Python."""
    return f"--{key}" if on_command_line() else key


def resume_option() -> str:
    """`--resume` on the command line, `resume=True` in Python."""
    return "--resume" if on_command_line() else "resume=True"


def again(same: bool = True) -> str:
    """How the caller repeats what failed: "rerun the same command" (or "rerun", for a changed one) or, in Python,
    "call it again"."""
    return ("rerun the same command" if same else "rerun") if on_command_line() else "call it again"


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
