"""Running statistics of the reliability gate, and alarms when traffic leaves the calibrated
range (docs/method.md section 4). Numpy only, and free on the device: it reads the outputs the
graph already gives (gate_score, or fvu in graphs from before issue 12, and steered).

The calibration (steering.json, copied into the manifest as steering.gate_stats) says how the
gate scored the SAE's training activations: the share that passed (pass_rate, about q) and
score quantiles. The monitor keeps the last `window` images and compares:

- pass rate: the window's share of steered images below pass_rate - pass_margin. The margin
  is there because held-out in-domain images pass less often than the SAE's own training rows
  (the SAE fits those better): measured on the demo, q = 0.99 let 94-96% of held-out in-domain
  images through (benchmarks/README.md, gate table), so a warning at 0.99 would fire on good
  traffic.
- score level: the window's median above the calibrated p95: the typical input now scores like
  the worst 5% of the training data.
- per image: a score above the calibrated maximum is flagged out of domain (`observe` returns
  the flags), whether or not tau was overridden.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from . import contract

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GateSummary:
    """What GateMonitor.summary returns (JSON-ready with dataclasses.asdict)."""

    count: int
    """Images observed since the session started (or the last reset)."""
    window: int
    """Images the rates and quantiles below are taken over (the most recent ones)."""
    pass_rate: float | None
    """Share of the window that the gate steered; None before any image."""
    quantiles: dict[str, float]
    """p50, p90, p99 of the window's gate scores."""
    ood_fraction: float | None
    """Share of the window scoring above the calibrated maximum."""
    calibrated: dict[str, float]
    """The manifest's steering.gate_stats (empty when the export predates them)."""
    alarms: tuple[str, ...]
    """Drift warnings in force now (empty: traffic looks like the calibration)."""


class GateMonitor:
    """Running gate statistics with drift and out-of-domain alarms (module docstring)."""

    def __init__(self, calibrated: dict[str, float] | None, *, window: int = 2048,
                 min_count: int = 200, pass_margin: float = 0.10, median_limit: str = "p95"):
        if window < 1 or min_count < 1:
            raise ValueError(f"window and min_count: expected >= 1, got {window}, {min_count}")
        self.calibrated = dict(calibrated or {})
        self.window, self.min_count = window, min_count
        self.pass_margin, self.median_limit = pass_margin, median_limit
        self._scores = np.zeros(window, np.float64)
        self._steered = np.zeros(window, bool)
        self._count = 0
        self._warned: set[str] = set()

    @classmethod
    def from_manifest(cls, manifest, **kwargs) -> GateMonitor:
        """A monitor for an exported model (runtime.manifest.Manifest)."""
        return cls(manifest.steering.gate_stats, **kwargs)

    def reset(self) -> None:
        self._count = 0
        self._warned.clear()

    def observe(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        """Record one run's outputs; returns [B] bool: images scoring above the calibrated max."""
        score = np.asarray(outputs.get(contract.GATE_SCORE, outputs.get(contract.FVU)), np.float64)
        steered = np.asarray(outputs[contract.STEERED], bool)
        for start in range(0, len(score), self.window):  # a batch larger than the window
            chunk = slice(start, start + self.window)
            self._push(score[chunk], steered[chunk])
        self._warn_on_new_alarms()
        limit = self.calibrated.get("max")
        return score > limit if limit is not None else np.zeros(len(score), bool)

    def _push(self, score: np.ndarray, steered: np.ndarray) -> None:
        idx = (self._count + np.arange(len(score))) % self.window
        self._scores[idx] = score
        self._steered[idx] = steered
        self._count += len(score)

    def _recent(self) -> tuple[np.ndarray, np.ndarray]:
        n = min(self._count, self.window)
        return self._scores[:n], self._steered[:n]  # order does not matter for the statistics

    def alarms(self) -> tuple[str, ...]:
        """The drift warnings in force now (module docstring)."""
        return tuple(self._rules().values())

    def _rules(self) -> dict[str, str]:
        """Rule name -> warning, for the rules failing now."""
        scores, steered = self._recent()
        if len(scores) < self.min_count or not self.calibrated:
            return {}
        found = {}
        expected = self.calibrated.get("pass_rate")
        if expected is not None and steered.mean() < expected - self.pass_margin:
            found["pass_rate"] = (f"gate pass rate {steered.mean():.1%} over the last "
                                  f"{len(scores)} images, calibrated {expected:.1%}: inputs look "
                                  "out of domain, VS2 falls back to plain CLIP for them")
        limit = self.calibrated.get(self.median_limit)
        if limit is not None and np.median(scores) > limit:
            found["median"] = (f"median gate score {np.median(scores):.4g} over the last "
                               f"{len(scores)} images is above the calibrated {self.median_limit} "
                               f"{limit:.4g}: inputs drift away from the SAE's training data")
        return found

    def _warn_on_new_alarms(self) -> None:
        """Log each rule once when it starts failing (again after it has recovered)."""
        now = self._rules()
        for rule, message in now.items():
            if rule not in self._warned:
                log.warning("vs2 gate drift: %s", message)
        self._warned = set(now)

    def summary(self) -> GateSummary:
        scores, steered = self._recent()
        limit = self.calibrated.get("max")
        quantiles = ({name: float(np.quantile(scores, q)) for name, q in
                      (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))} if len(scores) else {})
        return GateSummary(
            count=self._count, window=len(scores),
            pass_rate=float(steered.mean()) if len(scores) else None, quantiles=quantiles,
            ood_fraction=(float((scores > limit).mean()) if len(scores) and limit is not None
                          else None),
            calibrated=dict(self.calibrated), alarms=self.alarms())
