"""Hot swap: the service's current model version, replaced without dropping a request.

A :class:`ModelService` holds one :class:`~gdmix.serving.loader.ServingModel`. A
request takes a reference to it when it starts and scores with that one to the end; a
swap only rebinds the service's reference (one assignment, atomic), so a request never
sees half of two versions, and the old version is freed when its last request is done.

A watcher thread polls the source every ``poll_interval`` seconds: the ``current``
pointer of a model store, or the identity of a model folder's manifest (a folder
replaced by an atomic save gets a new one). When it changed, the new version is loaded
and checked in that thread while the old one keeps serving, then swapped in. A version
that fails to load or check is refused: the old one keeps serving, the failure is
logged and counted, and that version is not tried again until the pointer moves or a
reload is asked for (``POST /reload``, :meth:`ModelService.reload`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gdmix.errors import GDMixError
from gdmix.model import model_path
from gdmix.serving.loader import ServingModel, load_serving_model
from gdmix.serving.scorer import RandomScorer

__all__ = ["ModelService", "ReloadOutcome"]

logger = logging.getLogger("gdmix")


@dataclass
class ReloadOutcome:
    """What a reload did.

    Attributes
    ----------
    status : str
        ``swapped`` (a new version serves), ``unchanged`` (the source still points at the
        version serving) or ``refused`` (the new version failed; the old one serves).
    version : int or None
        The version serving after the reload.
    previous : int or None
        The version serving before it.
    error : str or None
        Why the new version was refused.
    """

    status: str
    version: int | None
    previous: int | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"status": self.status, "version": self.version, "previous": self.previous,
                "error": self.error}  # fmt: skip


def _identity(folder: Path) -> tuple[str, int, int]:
    st = os.stat(folder / "manifest.json")
    return str(folder), st.st_ino, st.st_mtime_ns


class ModelService:
    """The model a scoring service serves, kept current with its source.

    Parameters
    ----------
    source : path
        A model store (its ``current`` version is served) or a model folder.
    poll_interval : float
        Seconds between checks of the source by the watcher thread; 0 or less: no
        watcher (reloads only when asked).
    trust_custom_code : bool
        Allow deep coordinates to import the custom module their manifest names.
    loader : callable, optional
        ``loader(folder, trust_custom_code=...) -> ServingModel`` (the default loads and
        checks with :func:`~gdmix.serving.loader.load_serving_model`).
    """

    def __init__(
        self,
        source: str | os.PathLike[str],
        *,
        poll_interval: float = 1.0,
        trust_custom_code: bool = False,
        loader: Callable[..., ServingModel] | None = None,
    ) -> None:
        self.source = Path(source)
        self.poll_interval = float(poll_interval)
        self.trust_custom_code = trust_custom_code
        self._loader = loader or load_serving_model
        self._model: ServingModel | None = None
        self._identity: tuple[str, int, int] | None = None
        self._failed: dict[tuple[str, int, int], str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: Versions swapped in since the start (the first load is not a swap).
        self.swaps = 0
        #: Versions refused (failed to load or check).
        self.load_failures = 0
        #: Why the last refused version was refused.
        self.last_error: str | None = None

    @property
    def model(self) -> ServingModel:
        """The version serving now (take it once per request)."""
        model = self._model
        if model is None:
            raise RuntimeError("the service has no model yet: call start() first")
        return model

    # -- life cycle ---------------------------------------------------------------
    def start(self) -> ServingModel:
        """Load the source's version (raising when it fails) and start the watcher."""
        outcome = self.reload(retry_failed=True)
        if outcome.status == "refused":
            raise GDMixError(outcome.error or "the model failed to load")
        if self.poll_interval > 0 and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._watch, name="gdmix-model-watcher",
                                            daemon=True)  # fmt: skip
            self._thread.start()
        return self.model

    def stop(self) -> None:
        """Stop the watcher thread (the model keeps serving in-process callers)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, 2 * self.poll_interval))
            self._thread = None

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_interval):
            try:
                self.reload()
            except Exception:  # the watcher must outlive any surprise
                logger.exception("model watcher: unexpected error (the current version serves)")

    # -- reloading ----------------------------------------------------------------
    def _target(self) -> tuple[Path, tuple[str, int, int]]:
        folder = model_path(self.source)
        return folder, _identity(folder)

    def reload(self, *, retry_failed: bool = False) -> ReloadOutcome:
        """Load the version the source points at, if it is not the one serving, and swap
        it in when it loads and checks.

        Parameters
        ----------
        retry_failed : bool
            Try again a version that was refused before (otherwise it stays refused
            until the source points elsewhere).

        Returns
        -------
        ReloadOutcome
        """
        with self._lock:
            previous = self._model.version if self._model is not None else None
            try:
                folder, ident = self._target()
                problem = None
            except (GDMixError, OSError) as err:  # no current version, a dangling pointer
                problem = f"{self.source}: {err}"
                folder, ident = self.source, (problem, 0, 0)
            if ident == self._identity:
                return ReloadOutcome("unchanged", previous, previous)
            if ident in self._failed and not retry_failed:
                return ReloadOutcome("refused", previous, previous, self._failed[ident])
            if problem is not None:
                return self._refuse(ident, problem, previous)
            start = time.perf_counter()
            try:
                model = self._loader(folder, trust_custom_code=self.trust_custom_code)
                if _identity(folder) != ident:  # replaced while we read it: read it again
                    raise GDMixError(f"{folder} changed while it was being loaded")
            except Exception as err:  # anything a broken version raises: refuse it
                text = str(err) if isinstance(err, GDMixError | OSError) else repr(err)
                return self._refuse(ident, text, previous)
            first = self._model is None
            self._model, self._identity = model, ident
            self._failed.pop(ident, None)
            if not first:
                self.swaps += 1
            logger.info(
                "serving %s (version %s) after %.2fs%s", folder, model.version,
                time.perf_counter() - start, "" if first else f"; was version {previous}",
            )  # fmt: skip
            return ReloadOutcome("swapped", model.version, previous)

    def _refuse(
        self, ident: tuple[str, int, int], error: str, previous: int | None
    ) -> ReloadOutcome:
        self.load_failures += 1
        self.last_error = error
        self._failed[ident] = error
        logger.error("refused a model version, version %s keeps serving: %s", previous, error)
        return ReloadOutcome("refused", previous, previous, error)

    # -- reporting ----------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """Figures of the serving model for ``/metrics`` and ``/healthz``."""
        model = self._model
        entities = {}
        if model is not None:
            for s in model.scorers:
                if isinstance(s, RandomScorer):
                    entities[s.name] = len(s.table.entities)
        return {
            "version": model.version if model is not None else None,
            "path": str(model.path) if model is not None else None,
            "swaps": self.swaps,
            "load_failures": self.load_failures,
            "last_error": self.last_error,
            "load_seconds": model.load_seconds if model is not None else 0.0,
            "loaded_at": model.loaded_at if model is not None else 0.0,
            "entities": entities,
        }
