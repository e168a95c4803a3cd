"""The interface every coordinate (fixed or random effect) implements."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gdmix.config import FixedEffectConfig, RandomEffectConfig
from gdmix.data.features import FeatureIndex
from gdmix.errors import ModelDirectoryError

__all__ = ["Coordinate", "Validation"]


@dataclass
class Validation:
    """The validation table as a coordinate sees it during :meth:`Coordinate.fit`."""

    design: Any
    y: np.ndarray
    weight: np.ndarray
    offset: np.ndarray


class Coordinate(ABC):
    """One block of block coordinate descent.

    A coordinate turns a table into its own design (:meth:`design`), fits its
    parameters given the other coordinates' scores as offset (:meth:`fit`), scores
    a design (:meth:`score`), and saves/loads itself in a model directory folder.

    Parameters
    ----------
    config : FixedEffectConfig or RandomEffectConfig
        The coordinate's settings.
    """

    kind: str = ""

    def __init__(self, config: FixedEffectConfig | RandomEffectConfig) -> None:
        self.config = config
        self.name = config.name
        self.features: FeatureIndex | None = None
        self.params: dict[str, Any] = dict(config.search_grid()[0])
        self.fitted = False
        #: Folder of the model this coordinate is kept frozen from (a locked coordinate):
        #: saving hard-links its files from there instead of writing them again.
        self.frozen_source: Path | None = None

    @property
    def l2(self) -> float:
        """The ``l2`` penalty of the current parameters."""
        return float(self.params["l2"])

    # -- data ---------------------------------------------------------------
    @abstractmethod
    def build(self, frame: pd.DataFrame) -> None:
        """Build index maps (features, entities) from the training table.

        Fixed and random effects also take ``base``, the same coordinate of a previous
        model, to warm-start from.
        """

    @abstractmethod
    def design(self, frame: pd.DataFrame, where: str, *, training: bool = False) -> Any:
        """Encode ``frame`` into this coordinate's design."""

    @abstractmethod
    def columns(self) -> list[str]:
        """Data columns this coordinate reads."""

    # -- model --------------------------------------------------------------
    @abstractmethod
    def fit(
        self,
        design: Any,
        y: np.ndarray,
        weight: np.ndarray,
        offset: np.ndarray,
        *,
        validation: Validation | None = None,
        **params: Any,
    ) -> dict[str, Any]:
        """Fit with hyper-parameters ``params``, warm-starting from the current parameters.

        ``params`` is one entry of ``config.search_grid()`` (``l2``, ...).
        ``validation`` (design, labels, weights, offsets of the validation table) is there
        for coordinates that stop early on their own (deep, GBDT); others ignore it.

        Returns diagnostics (iterations, convergence) as a JSON-ready dict.
        """

    @abstractmethod
    def score(self, design: Any) -> np.ndarray:
        """Per-row score (logit contribution) of ``design``."""

    @abstractmethod
    def get_state(self) -> dict[str, Any]:
        """Copy of the fitted parameters (for keeping the best model seen)."""

    @abstractmethod
    def set_state(self, state: dict[str, Any]) -> None:
        """Restore parameters from :meth:`get_state`."""

    def penalty(self) -> float:
        """The coordinate's share of the training objective besides the loss (its prior's
        negative log density up to a constant, e.g. ``l2/2 * ||w||^2``); 0 when it has
        none that adds up with a log loss (deep and GBDT coordinates)."""
        return 0.0

    def stats(self) -> dict[str, Any]:
        """Facts about the training data the coordinate keeps in the manifest."""
        return {}

    def restore_stats(self, stats: dict[str, Any]) -> None:
        """Take back what :meth:`stats` saved (on load); nothing by default."""
        return None

    # -- persistence --------------------------------------------------------
    @abstractmethod
    def _save_params(self, folder: Path) -> None: ...

    @abstractmethod
    def _load_params(self, folder: Path) -> None: ...

    def save(self, folder: Path) -> None:
        """Write the coordinate into ``folder`` (feature index map + coefficients)."""
        folder.mkdir(parents=True, exist_ok=True)
        assert self.features is not None
        (folder / "features.json").write_text(json.dumps(self.features.to_dict()))
        self._save_params(folder)

    @classmethod
    def load(
        cls,
        folder: Path,
        config: FixedEffectConfig | RandomEffectConfig,
        params: dict[str, Any],
    ) -> Coordinate:
        """Read a coordinate written by :meth:`save`."""
        coord = cls(config)
        coord.params = dict(params)  # the fitted values (a config may say "auto")
        try:
            coord.features = FeatureIndex.from_dict(
                json.loads((folder / "features.json").read_text())
            )
            coord._load_params(folder)
        except (OSError, KeyError, TypeError, ValueError) as err:
            raise ModelDirectoryError(
                f"coordinate folder {folder} is unreadable or incomplete: {err}"
            ) from None
        coord.fitted = True
        return coord
