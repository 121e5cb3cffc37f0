"""taskembed: fine-tune a transformer classifier with discriminative learning rates, offline first.

    import taskembed
    result = taskembed.train("configs/sentiment.yaml")
    clf = taskembed.load(result.output_dir)
    clf.predict(["a gripping, beautifully shot film"])
"""

from taskembed.errors import UserError

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
