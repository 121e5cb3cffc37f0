"""Wall time of every optimizer step over a whole training run: taskembed or B1 (the tuned Trainer of train_bench.py).

    python bench/step_times.py taskembed steps-taskembed.json     # full rotten_tomatoes, 3 epochs, seed 0
    python bench/step_times.py b1 steps-b1.json
    python bench/step_times.py taskembed small.json --epochs 1 --max-train 600

A probe for one question: does a system's step get slower as a run goes on (a growing cache, a fragmenting heap), so
that a short run's speed-up over B1 would not hold for a long one? Each system trains as train_bench.py's worker trains
it (its worker function, with the same data files, hyperparameters and threads); taskembed logs every step
(`train.log_every 1`, its `on_log` records the time), the Trainer gets a callback at each step's end. It prints the mean milliseconds a step over
windows of 100 steps and per epoch, and writes every step's time to the JSON. Run one system at a time, alone.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("system", choices=("taskembed", "b1"))
    p.add_argument("out", help="JSON file for the step times")
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--max-train", type=int, default=None, help="a sample of the training split (default: all of it)")
    p.add_argument("--work", default="/tmp/taskembed-step-times", help="folder for the data files and the trained model")
    args = p.parse_args(argv)

    import os

    from bench import train_bench as tb

    os.environ.update(tb.OFFLINE_ENV)
    import taskembed  # sets the oneDNN cache cap before torch loads, as in every train_bench worker
    from taskembed.modeling import resolve_model

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model = resolve_model("sentence-transformers/all-MiniLM-L6-v2")
    hp = {"lr": 1.5e-4, "batch_size": 32, "warmup_ratio": 0.1, "weight_decay": 0.01, "max_grad_norm": 1.0, "max_length": 128}
    ds = tb.prepare_dataset("rotten_tomatoes", argparse.Namespace(max_train=args.max_train, max_test=None, max_length=hp["max_length"]),
                            model, work)
    times: list[tuple[int, float]] = []
    if args.system == "taskembed":
        real_train = taskembed.train

        def train(config, overrides, **kwargs):  # the worker's own call, logging every step to the clock
            def on_log(entry: dict) -> None:
                if entry.get("kind") == "train":
                    times.append((entry["step"], time.perf_counter()))

            return real_train(config, {**overrides, "train.log_every": 1}, on_log=on_log, **kwargs)

        taskembed.train = train
    else:
        import transformers

        class StepEnd(transformers.TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                times.append((state.global_step, time.perf_counter()))

        real_init = transformers.Trainer.__init__

        def init(self, *a, **kw):  # the worker builds its own Trainer: add the callback to it
            real_init(self, *a, **kw)
            self.add_callback(StepEnd())

        transformers.Trainer.__init__ = init
    spec = {"dataset": ds, "hp": hp, "system": args.system, "seed": 0, "epochs": args.epochs, "model_path": model,
            "run_dir": str(work / args.system), "threads": 2}
    result = tb.WORKERS[args.system](spec, time.perf_counter())
    accuracy, train_s = result["accuracy"], result["train_s"]

    steps = [b - a for (_, a), (_, b) in zip(times, times[1:])]  # from the first step's end: no warm-up in it
    per_epoch = -(-ds["train"] // hp["batch_size"])
    windows = [1000 * sum(steps[i:i + 100]) / len(steps[i:i + 100]) for i in range(0, len(steps), 100)]
    epochs = [1000 * sum(steps[i:i + per_epoch]) / len(steps[i:i + per_epoch]) for i in range(0, len(steps), per_epoch)]
    Path(args.out).write_text(json.dumps({"system": args.system, "train_s": train_s, "test_accuracy": accuracy,
                                          "steps_per_epoch": per_epoch, "step_end_times": times}) + "\n")
    print(f"{args.system}: {len(times)} steps, training {train_s:.1f} s, test accuracy {accuracy:.4f}")
    print("ms a step, windows of 100 steps:", ", ".join(f"{w:.0f}" for w in windows))
    print("ms a step, each epoch:", ", ".join(f"{e:.0f}" for e in epochs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
