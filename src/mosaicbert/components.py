"""Importing this module registers every builder of the package in :mod:`mosaicbert.registry`.

Each package registers its own parts when imported; this is the one list of those packages, so that
a recipe can be validated and built from any entry point.
"""

from . import composer_models  # noqa: F401  models: hf_bert, mosaic_bert
from .data import text_dataset  # noqa: F401  dataloaders: text
from .training import builders  # noqa: F401  optimizers, schedulers, algorithms, callbacks, loggers
