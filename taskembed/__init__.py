"""taskembed: fine-tune a transformer classifier with discriminative learning rates, offline first.

    import taskembed
    result = taskembed.train("configs/sentiment.yaml")
    clf = taskembed.load(result.output_dir)
    clf.predict(["a gripping, beautifully shot film"])
"""

import os as _os

from taskembed.errors import UserError

# oneDNN (PyTorch's CPU matrix products in bf16, and taskembed's float32 inference) keeps up to 1,024 compiled
# primitives, one per shape. Training on texts of varying length brings a new shape almost every step, and the
# cache grew the default job's peak memory by about 0.5 GB (2.91 against 2.43 GB at 256, no slower;
# docs/benchmarks.md). Set before the first product, which is why here; a value the user set wins.
_os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "256")

__version__ = "0.1.0"
__all__ = ["train", "load", "evaluate", "plan", "lr_find", "load_config", "Config", "UserError", "__version__"]


def __getattr__(name: str):
    # The API pulls in torch and transformers; import it on first use so `taskembed --help` stays quick.
    if name in ("train", "load", "evaluate", "plan", "lr_find"):
        from taskembed import api

        return getattr(api, name)
    if name in ("load_config", "Config"):
        from taskembed import config

        return getattr(config, name)
    raise AttributeError(name)
