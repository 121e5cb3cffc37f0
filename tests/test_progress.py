"""Progress on a terminal is tqdm's bar; redirected, it is whole lines, few of them."""

from __future__ import annotations

import io

from taskembed.progress import Lines, progress_bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_redirected_stream_gets_whole_lines_at_most_once_an_interval():
    out = io.StringIO()
    bar = progress_bar(957, "train", "step", stream=out)
    assert isinstance(bar, Lines)
    for _ in range(957):
        bar.update(1)
        bar.set_postfix(loss="0.3125", lr="1.00e-03", refresh=False)
    bar.close()
    bar.close()  # a second close writes nothing more
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and len(lines) == 1  # the 30 s interval never passed: the closing line only
    line = lines[0]
    assert line.startswith("train: 957/957 steps (100%), ") and line.endswith(" s, loss=0.3125, lr=1.00e-03")


def test_lines_come_every_interval_and_resume_from_the_initial_count():
    out = io.StringIO()
    with Lines(10, "lr-find", "step", initial=4, stream=out, interval=0.0) as bar:
        bar.update(1)
        bar.update(2)
    assert [line.split(",")[0] for line in out.getvalue().splitlines()] == [
        "lr-find: 5/10 steps (50%)", "lr-find: 7/10 steps (70%)", "lr-find: 7/10 steps (70%)"]
    unknown = io.StringIO()
    with Lines(None, "embedding", "text", stream=unknown) as bar:
        bar.update(12_752)
    assert unknown.getvalue().startswith("embedding: 12,752 texts, ")


def test_a_terminal_gets_the_tqdm_bar():
    from tqdm.auto import tqdm

    out = _Terminal()
    bar = progress_bar(3, "train", "step", stream=out)
    assert isinstance(bar, tqdm)
    bar.update(3)
    bar.close()
    assert "\r" in out.getvalue() and "3/3" in out.getvalue()


def test_lines_say_the_time_left_at_this_sessions_rate(monkeypatch):
    # 3 steps done in 6 s after a resume at step 4: 3 steps left take about 6 s more (the resumed steps do not count).
    from taskembed import progress

    clock = iter([100.0, 106.0])
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    out = io.StringIO()
    bar = Lines(10, "train", "step", initial=4, stream=out, interval=1e9)
    bar.n = 7
    bar._line()
    assert out.getvalue().strip() == "train: 7/10 steps (70%), 6 s, about 6 s left"
