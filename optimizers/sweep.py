"""Sweep: a grid of uniform settings, each measured exactly as ``apply`` measures it, and the
Pareto frontier of packed bytes against accuracy.

Every point is ``explore.run`` on the prepared model, so its accuracy, packed, gzip and entropy
bytes are the figures ``python -m optimizers apply`` prints for that setting on the same data.
Without labels, *quality* is top-1 agreement with the original model instead of accuracy.

>>> result = sweep(prepared, Grid(sparsities=(0.0, 0.5), clusters=(None,), bits=(None, 4)))
... # doctest: +SKIP
>>> [p.packed_bytes for p in result.points if p.pareto]  # doctest: +SKIP
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from optimizers import explore
from optimizers.clustering import ClusteringConfig
from optimizers.pipeline import OptimizationConfig, Techniques, techniques_to_kwargs
from optimizers.pruning import PruningConfig
from optimizers.quantization import QuantizationConfig

Progress = Callable[[int, int], None]
MAX_POINTS = 2000  # a grid larger than this is a typo, not a sweep
OFF = "off"  # how the command line writes a stage that is left out


@dataclass(frozen=True)
class Grid:
    """The uniform settings to measure: every combination of the three axes.

    ``None`` leaves clustering or quantization out; sparsity 0 leaves pruning out. The other
    options are the library defaults (per-layer pruning, linear cluster start, symmetric
    per-channel quantization). The default has 4 x 3 x 3 = 36 points. ``data_aware`` prunes
    and rounds every point with calibration data (``optimizers.data_aware``; the prepared model
    must be calibrated): the frontier of what is reachable without training.

    >>> len(Grid().settings())
    36
    """

    sparsities: tuple[float, ...] = (0.0, 0.5, 0.75, 0.9)
    clusters: tuple[int | None, ...] = (None, 16, 4)
    bits: tuple[int | None, ...] = (None, 8, 4)
    data_aware: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.data_aware, bool):
            raise ValueError(f"data_aware must be true or false, got {self.data_aware!r}")
        for name in ("sparsities", "clusters", "bits"):
            values = tuple(getattr(self, name))
            object.__setattr__(self, name, values)
            if not values:
                raise ValueError(f"grid {name} must hold at least one value, got none")
            if len(set(values)) != len(values):
                raise ValueError(f"grid {name} must not repeat a value, got {list(values)}")
        size = len(self.sparsities) * len(self.clusters) * len(self.bits)
        if size > MAX_POINTS:
            raise ValueError(f"a grid holds at most {MAX_POINTS} points, got {size}")
        self.settings()  # each value checked by its stage's own config

    def settings(self) -> list[Techniques]:
        """Every combination, gentlest first in each axis order."""
        return [
            technique(*axes)
            for axes in itertools.product(self.sparsities, self.clusters, self.bits)
        ]


def technique(sparsity: float, clusters: int | None, bits: int | None) -> Techniques:
    """The stages of one grid point (sparsity 0 and ``None`` leave a stage out).

    >>> technique(0.0, None, 4) == Techniques(quantization=QuantizationConfig(4))
    True
    """
    return Techniques(
        PruningConfig(sparsity) if sparsity else None,
        None if clusters is None else ClusteringConfig(clusters),
        None if bits is None else QuantizationConfig(bits),
    )


def grid_from_strings(items: Sequence[str]) -> Grid:
    """A grid from ``AXIS=V1,V2`` strings (axes ``sparsity``, ``clusters``, ``bits``; ``off``
    leaves a stage out); axes not given keep their defaults.

    >>> grid_from_strings(["bits=off,4", "sparsity=0,0.5"]).bits
    (None, 4)
    """
    axes: dict[str, Any] = {}
    names = {"sparsity": "sparsities", "clusters": "clusters", "bits": "bits"}
    for item in items:
        axis, _, values = item.partition("=")
        if axis not in names or not values:
            raise ValueError(
                f"--grid expects AXIS=V1,V2,... with AXIS one of {', '.join(names)}, got {item!r}"
            )
        try:
            parsed = [_grid_value(axis, v.strip()) for v in values.split(",")]
        except ValueError:
            raise ValueError(
                f"--grid {axis} has a value that is not a number: {values!r}"
            ) from None
        axes[names[axis]] = tuple(parsed)
    return Grid(**axes)


def _grid_value(axis: str, text: str) -> float | int | None:
    if text.lower() == OFF:
        return 0.0 if axis == "sparsity" else None
    return float(text) if axis == "sparsity" else int(text)


def uniform(setting: Techniques, data_aware: bool = False) -> OptimizationConfig:
    """The config that applies ``setting`` to every eligible layer (``data_aware``: with
    calibration data)."""
    return OptimizationConfig(**techniques_to_kwargs(setting), data_aware=data_aware)


@dataclass(frozen=True)
class Point:
    """One measured config: its quality and sizes, as ``apply`` reports them."""

    config: OptimizationConfig
    accuracy: float | None  # None without labels
    agreement: float  # top-1 agreement with the original model
    snr_db: float | None  # output signal-to-noise ratio; None when the outputs are unchanged
    packed_bytes: int
    gzip_bytes: int
    entropy_bytes: int
    pareto: bool = False
    gzip_exact: bool = True  # False: ``gzip_bytes`` is an estimate (``size.Sizes``)

    @property
    def quality(self) -> float:
        """Accuracy with labels, agreement without: what the budget and the frontier use."""
        return self.agreement if self.accuracy is None else self.accuracy

    @property
    def per_layer(self) -> bool:
        """Whether layers differ (overrides or skipped layers), not one uniform setting."""
        return bool(self.config.overrides or self.config.skip)


def point(outcome: explore.Outcome, config: OptimizationConfig) -> Point:
    """The figures of a measured ``outcome`` of ``config``."""
    if outcome.fidelity is None or outcome.sizes.gzip is None:
        raise ValueError("a point needs an outcome measured on evaluation data")
    return Point(
        config,
        outcome.accuracy,
        outcome.fidelity.agreement,
        outcome.fidelity.snr_db,
        outcome.sizes.packed,
        outcome.sizes.gzip,
        outcome.sizes.entropy,
        gzip_exact=outcome.sizes.gzip_exact,
    )


def measure(prepared: explore.Prepared, config: OptimizationConfig) -> Point:
    """``config`` measured on ``prepared``'s data by ``explore.run``."""
    return point(explore.run(prepared, config), config)


def pareto_flags(packed: Sequence[float], quality: Sequence[float]) -> list[bool]:
    """Which points no other point dominates (no more bytes and no less quality, and better in
    one of the two). Equal points do not dominate each other, so both are on the frontier.

    >>> pareto_flags([10, 20, 20, 5], [0.9, 0.95, 0.9, 0.5])
    [True, True, False, True]
    """
    p, q = np.asarray(packed, float), np.asarray(quality, float)
    no_worse = (p[:, None] <= p[None, :]) & (q[:, None] >= q[None, :])  # [j, i]: j vs i
    better = (p[:, None] < p[None, :]) | (q[:, None] > q[None, :])
    return [not bool(x) for x in (no_worse & better).any(axis=0)]


def within(quality: float, reference: float, budget: float) -> bool:
    """Whether ``quality`` is at most ``budget`` percentage points below ``reference``."""
    return quality >= reference - budget / 100 - 1e-9  # accuracies are k/n: allow rounding


def check_budget(budget: float) -> None:
    if not 0 <= budget <= 100:
        raise ValueError(f"budget must be between 0 and 100 points, got {budget!r}")


@dataclass(frozen=True)
class Sweep:
    """The untouched model and every grid point, ``pareto`` set on the frontier."""

    baseline: Point
    points: tuple[Point, ...]

    def best_within(self, budget: float) -> Point | None:
        """The smallest packed point at most ``budget`` points below the untouched model."""
        check_budget(budget)
        fits = [p for p in self.points if within(p.quality, self.baseline.quality, budget)]
        return min(fits, key=lambda p: (p.packed_bytes, -p.quality), default=None)

    def uniform(self) -> Sweep:
        """The points that set every layer alike (their flags stay those of the whole sweep)."""
        return replace(self, points=tuple(p for p in self.points if not p.per_layer))


def sweep(prepared: explore.Prepared, grid: Grid, on_point: Progress | None = None) -> Sweep:
    """Measure every setting of ``grid`` on ``prepared``, in grid order, as a study kept in
    memory (``optimizers.study`` keeps one in a database); ``on_point(done, total)`` after each.
    """
    from optimizers import study  # it builds on this module

    if prepared.x is None:
        raise ValueError("a sweep needs evaluation data (an .npz with x and optionally y)")
    identity = study.Identity("model", "", "")  # one study in its own storage: nothing to mix up
    names = list(dict.fromkeys(r.layer for r in prepared.refs))
    kept = study.open_study(study.open_storage(None), identity, grid, names)
    study.run(kept, prepared, on_trial=on_point)
    return study.result(kept, measure(prepared, OptimizationConfig())).sweep


def point_to_dict(p: Point) -> dict[str, Any]:
    """JSON-able figures of a point (its setting as sparsity, clusters, bits when uniform)."""
    return {
        "accuracy": p.accuracy,
        "agreement": p.agreement,
        "output_snr_db": p.snr_db,
        "packed_bytes": p.packed_bytes,
        "gzip_bytes": p.gzip_bytes,
        "gzip_exact": p.gzip_exact,
        "entropy_bytes": p.entropy_bytes,
    }


def grid_point_to_dict(p: Point) -> dict[str, Any]:
    c = p.config
    return {
        "sparsity": c.pruning.sparsity if c.pruning else 0.0,
        "clusters": c.clustering.clusters if c.clustering else None,
        "bits": c.quantization.bits if c.quantization else None,
        "data_aware": c.data_aware,
        **point_to_dict(p),
        "pareto": p.pareto,
    }
