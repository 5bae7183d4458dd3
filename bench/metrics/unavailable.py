"""The signal a metric raises when it cannot be computed here (missing weights, missing package).

A metric that needs local model weights the user has not supplied is *unavailable*: the scorer
reports it with ``value: null`` and the reason, never as 0 and never by downloading anything.
Metric functions raise :class:`MetricUnavailable`; the generic scorer catches it.

It deliberately does not derive from :class:`bench.interfaces.BenchError`: a BenchError stops the
run (the user must fix something), an unavailable metric is recorded and the run goes on. A path
the user *did* give that is wrong (file absent, malformed checkpoint) is a BenchError.
"""

from __future__ import annotations


class MetricUnavailable(Exception):
    """The metric cannot be computed in this environment; ``reason`` says why (one line)."""

    def __init__(self, reason: str, metric: str | None = None) -> None:
        self.reason = reason
        self.metric = metric
        super().__init__(f"{metric}: {reason}" if metric else reason)
