"""Training EAGLE-3 draft heads: the TTT objective, base features (online or cached), the trainer.

    from eagle.train import train_draft, TrainConfig        # in-process, for tests and notebooks
    from eagle.train import train                           # the full run behind main.py / `eagle train`

Names are imported lazily so `eagle --help` does not pay for torch.
"""

_EXPORTS = {
    "TrainConfig": "eagle.train.config",
    "train_draft": "eagle.train.quickfit",
    "fit": "eagle.train.quickfit",
    "FitResult": "eagle.train.quickfit",
    "train": "eagle.train.trainer",
    "TrainError": "eagle.train.dataset",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'eagle.train' has no attribute {name!r}")
