"""taskembed: fine-tune a transformer classifier with discriminative learning rates, offline first.

    import taskembed
    result = taskembed.train("configs/sentiment.yaml")
    clf = taskembed.load(result.output_dir)
    clf.predict(["a gripping, beautifully shot film"])
"""

import os as _os

from taskembed.errors import UserError

# oneDNN (PyTorch's CPU matrix products in bf16, and taskembed's float32 inference) compiles a primitive for each
# product shape and keeps up to 1,024 (its default). Training on texts of varying length brings about 20 shapes per
# text length, some 1,000 in an epoch of rotten_tomatoes, so a small cache recompiles many of them every step. A cap
# of 4,096 keeps them all: 3,000 texts for 2 epochs train 1.22x faster than at 256, for about 100 MB more peak memory
# (2.51 GB for the default job; docs/benchmarks.md). Set before the first product, which is why here; a value the
# user set wins.
_os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "4096")

__version__ = "0.1.0"
__all__ = ["train", "load", "evaluate", "plan", "lr_find", "push", "load_config", "Config", "UserError", "TrainingInterrupted",
           "__version__"]


def __getattr__(name: str):
    # The API pulls in torch and transformers; import it on first use so `taskembed --help` stays quick.
    if name in ("train", "load", "evaluate", "plan", "lr_find", "push", "TrainingInterrupted"):
        from taskembed import api

        return getattr(api, name)
    if name in ("load_config", "Config"):
        from taskembed import config

        return getattr(config, name)
    raise AttributeError(name)
