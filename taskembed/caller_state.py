"""What a call into taskembed borrows from the caller's Python process, and gives back.

Training seeds Python's, NumPy's and torch's global random generators (the seed fixes the run: the head's
initialisation, the shuffling, dropout), may set torch's thread count (`train.num_threads`), and loading a model turns
transformers' per-load reports and progress bars off. In a notebook those are the user's settings: after
`taskembed.train(...)` an unseeded `df.sample()` would draw the same rows in every session, later torch work would
keep training's thread count, and the user's own transformers warnings would be gone. The public entry points
therefore run inside `kept()`, which puts them back as they were. The command line runs in a process of its own and
gains nothing from it, nor loses anything.
"""

from __future__ import annotations

import functools
import random
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


@contextmanager
def kept() -> Iterator[None]:
    """Run the body, then restore the global random states, torch's thread count and transformers' verbosity and
    progress bars to what they were before it (also when it raises)."""
    import numpy as np
    import torch
    from transformers.utils import logging as hf_logging

    rng = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    # CUDA's generators only where CUDA was already in use: reading them would initialise it.
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    threads = torch.get_num_threads()
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    try:
        yield
    finally:
        random.setstate(rng[0])
        np.random.set_state(rng[1])
        torch.set_rng_state(rng[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        hf_logging.set_verbosity(verbosity)
        (hf_logging.enable_progress_bar if bars else hf_logging.disable_progress_bar)()


def keeps_caller_state(fn: F) -> F:
    """Decorator: `fn` runs inside `kept()`."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with kept():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
