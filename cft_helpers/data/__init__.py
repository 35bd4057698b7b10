"""Datasets: loaders per source schema, the built-in generator, preparation into the run store."""

from cft_helpers.data.prepare import (
    heldout_examples,
    language_table,
    load_prepared,
    prepare_datasets,
    training_examples,
)
from cft_helpers.data.schema import DataError, prompt_completion

__all__ = [
    "DataError",
    "heldout_examples",
    "language_table",
    "load_prepared",
    "prepare_datasets",
    "prompt_completion",
    "training_examples",
]
