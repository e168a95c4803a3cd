"""Counters and a latency histogram of the service, written in Prometheus' text format.

Kept by hand (no client library): a few integers updated on the event loop, rendered on
``GET /metrics``. The model's own figures (version, swaps, failed loads, load time) come
from the :class:`~gdmix.serving.swap.ModelService` at render time.
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter
from typing import Any

__all__ = ["DEFAULT_BUCKETS", "Metrics"]

#: Upper bounds (seconds) of the latency histogram's buckets.
DEFAULT_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def _label(value: Any) -> str:
    text = str(value)
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


class Metrics:
    """Request counts by endpoint and status, rows scored, and the ``POST /score``
    latency histogram.

    Parameters
    ----------
    buckets : tuple of float
        Upper bounds of the histogram's buckets, in seconds, increasing.
    """

    def __init__(self, buckets: tuple[float, ...] = DEFAULT_BUCKETS) -> None:
        self.buckets = tuple(buckets)
        self.requests: Counter[tuple[str, int]] = Counter()
        self.rows = 0
        self._hist = [0] * (len(self.buckets) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(
        self, endpoint: str, status: int, seconds: float | None = None, rows: int = 0
    ) -> None:
        """Count one answered request (and its latency, for ``/score``)."""
        with self._lock:
            self.requests[(endpoint, status)] += 1
            self.rows += rows
            if seconds is not None:
                self._hist[bisect.bisect_left(self.buckets, seconds)] += 1
                self._sum += seconds

    def render(self, model: dict[str, Any]) -> str:
        """The Prometheus text exposition.

        Parameters
        ----------
        model : dict
            ``version``, ``path``, ``swaps``, ``load_failures``, ``load_seconds``,
            ``loaded_at``, ``entities`` (per random effect) of the service's model.
        """
        with self._lock:
            requests = sorted(self.requests.items())
            hist, total, rows = list(self._hist), self._sum, self.rows
        lines = [
            "# HELP gdmix_requests_total Requests answered, by endpoint and HTTP status.",
            "# TYPE gdmix_requests_total counter",
        ]
        for (endpoint, status), count in requests:
            lines.append(
                f'gdmix_requests_total{{endpoint="{_label(endpoint)}",status="{status}"}} {count}'
            )
        lines += [
            "# HELP gdmix_request_duration_seconds Time to answer POST /score: parse, score, "
            "serialise.",
            "# TYPE gdmix_request_duration_seconds histogram",
        ]
        cumulative = 0
        for bound, count in zip(self.buckets, hist, strict=False):
            cumulative += count
            lines.append(
                f'gdmix_request_duration_seconds_bucket{{endpoint="/score",le="{bound}"}} '
                f"{cumulative}"
            )
        cumulative += hist[-1]
        lines += [
            f'gdmix_request_duration_seconds_bucket{{endpoint="/score",le="+Inf"}} {cumulative}',
            f'gdmix_request_duration_seconds_sum{{endpoint="/score"}} {_number(total)}',
            f'gdmix_request_duration_seconds_count{{endpoint="/score"}} {cumulative}',
            "# HELP gdmix_rows_scored_total Rows scored by POST /score.",
            "# TYPE gdmix_rows_scored_total counter",
            f"gdmix_rows_scored_total {rows}",
            "# HELP gdmix_model_version Store version number of the model being served "
            "(0 for a model folder outside a store).",
            "# TYPE gdmix_model_version gauge",
            f"gdmix_model_version {model.get('version') or 0}",
            "# HELP gdmix_model_info The model being served.",
            "# TYPE gdmix_model_info gauge",
            f'gdmix_model_info{{version="{_label(model.get("version"))}",'
            f'path="{_label(model.get("path"))}"}} 1',
            "# HELP gdmix_model_swaps_total Versions swapped in since the service started.",
            "# TYPE gdmix_model_swaps_total counter",
            f"gdmix_model_swaps_total {model.get('swaps', 0)}",
            "# HELP gdmix_model_load_failures_total Versions refused because they failed to "
            "load or check (the previous one kept serving).",
            "# TYPE gdmix_model_load_failures_total counter",
            f"gdmix_model_load_failures_total {model.get('load_failures', 0)}",
            "# HELP gdmix_model_load_seconds Time taken to load and check the model being served.",
            "# TYPE gdmix_model_load_seconds gauge",
            f"gdmix_model_load_seconds {_number(float(model.get('load_seconds', 0.0)))}",
            "# HELP gdmix_model_loaded_timestamp_seconds When the model being served was "
            "swapped in (Unix time).",
            "# TYPE gdmix_model_loaded_timestamp_seconds gauge",
            f"gdmix_model_loaded_timestamp_seconds {_number(float(model.get('loaded_at', 0.0)))}",
            "# HELP gdmix_model_entities Entities of each random effect of the model.",
            "# TYPE gdmix_model_entities gauge",
        ]
        for name, count in sorted((model.get("entities") or {}).items()):
            lines.append(f'gdmix_model_entities{{coordinate="{_label(name)}"}} {count}')
        return "\n".join(lines) + "\n"
