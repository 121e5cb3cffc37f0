"""Progress that reads well on a terminal and in a log file.

On a terminal (or in a notebook): a tqdm bar. Redirected to a file or a pipe, tqdm's carriage-return
redraws pile up on one line (the default training job wrote about 640 of them before its first validation
line); there a plain line is written every 30 seconds and one at the end.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any


def progress_bar(total: int | None, desc: str, unit: str, initial: int = 0, stream: IO[str] | None = None,
                 interval: float = 30.0):
    """A tqdm bar where `stream` (default stderr) is a terminal; otherwise `Lines`. Both take update, set_postfix, write and close."""
    stream = stream or sys.stderr
    if _is_terminal(stream) or "ipykernel" in sys.modules:  # a notebook's stderr is no terminal, but tqdm.auto draws a widget there
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, file=stream)
    return Lines(total, desc, unit, initial, stream, interval)


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class Lines:
    """Progress as whole lines: `desc: n/total unit (pct%), elapsed, time left, postfix`, at most one per `interval` seconds."""

    def __init__(self, total: int | None, desc: str, unit: str, initial: int = 0, stream: IO[str] | None = None,
                 interval: float = 30.0):
        self.total, self.desc, self.unit, self.n, self.initial = total, desc, unit, initial, initial
        self.stream = stream or sys.stderr
        self.interval = interval
        self.start = self.last = time.monotonic()
        self.postfix = ""
        self.closed = False

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self.last >= self.interval:
            self._line()

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def write(self, text: str) -> None:
        print(text, flush=True)  # where tqdm.write puts it: standard output

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._line()

    def __enter__(self) -> "Lines":
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False

    def _line(self) -> None:
        self.last = now = time.monotonic()
        done = f"{self.n:,}/{self.total:,} {self.unit}s ({100 * self.n / self.total:.0f}%)" if self.total else f"{self.n:,} {self.unit}s"
        elapsed = now - self.start
        parts = [f"{self.desc}: {done}", f"{elapsed:.0f} s"]
        if self.total and self.initial < self.n < self.total and elapsed > 0:  # at this session's rate (a resume's steps not counted)
            parts.append(f"about {(self.total - self.n) * elapsed / (self.n - self.initial):.0f} s left")
        parts += [self.postfix] if self.postfix else []
        print(", ".join(parts), file=self.stream, flush=True)


def seconds_text(seconds: float) -> str:
    """A duration for a person: whole seconds, with a tenth under ten (a short run's 0.4 s is not "0 s")."""
    return f"{seconds:.1f}" if seconds < 10 else f"{seconds:.0f}"
