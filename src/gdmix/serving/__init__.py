"""Online scoring: an HTTP service over a model store, with hot swaps of new versions.

``gdmix serve --store DIR`` (see :mod:`gdmix.cli.serve`) runs :func:`create_app` on
uvicorn. The pieces, each usable from Python:

- :mod:`~gdmix.serving.schema`: the request body and its field-by-field checks;
- :mod:`~gdmix.serving.tables`: entity id -> row hash tables and coefficient arrays,
  memory-mapped from ``coefficients.arrow``;
- :mod:`~gdmix.serving.scorer`: per-coordinate scorers equal to batch scoring;
- :mod:`~gdmix.serving.loader`: one version loaded and checked (:class:`ServingModel`);
- :mod:`~gdmix.serving.swap`: the version serving, kept current (:class:`ModelService`);
- :mod:`~gdmix.serving.metrics`: Prometheus counters and the latency histogram;
- :mod:`~gdmix.serving.app`: the Starlette application.

``gdmix.serving.app`` needs the ``serve`` extra (Starlette, uvicorn); the rest does not.
"""

from gdmix.serving.loader import ScoreResult, ServingModel, load_serving_model
from gdmix.serving.schema import Request, RequestError
from gdmix.serving.swap import ModelService, ReloadOutcome

__all__ = [
    "ModelService",
    "ReloadOutcome",
    "Request",
    "RequestError",
    "ScoreResult",
    "ServingModel",
    "load_serving_model",
]
