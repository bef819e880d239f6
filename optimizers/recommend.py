"""Which layer breaks accuracy, and a per-layer recipe that stays within an accuracy budget.

``sensitivity`` optimizes one layer at a time (every other layer stays float) and measures the
model's quality and output SNR: a layer whose quality falls most is the most fragile.

``recommend`` searches per-layer settings for the smallest packed size within a budget of
quality points below the untouched model, on the evaluation data:

1. Each layer is measured alone at every setting of the grid; a layer's useful settings are
   those on its own frontier of packed bytes against quality.
2. Greedy descent, from the untouched model and from the best uniform setting within budget:
   repeatedly move one layer to a smaller setting of its frontier, trying first the move that
   saves the most bytes per point of quality it cost that layer alone; a move is kept when the
   whole model stays within budget, else it is never tried again. Fragile layers thus stay
   gentle and robust ones go harsh.
3. The smallest config either descent kept is measured by ``explore.run``: the figures
   ``apply --recipe`` reports on the same data.

The search picks among a few hundred configs on the data it reports on, so its figure can be a
little optimistic; the tests check the budget on the samples' training splits, which it never
sees.

Packed bytes are a sum over tensors, so a layer's share at a setting is measured once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from statistics import fmean
from typing import Any

from optimizers import explore
from optimizers.clustering import ClusteringConfig
from optimizers.pipeline import OptimizationConfig, Techniques, describe, techniques_to_dict
from optimizers.pruning import PruningConfig
from optimizers.quantization import QuantizationConfig
from optimizers.size import GzipBasis, packed_bits
from optimizers.sweep import Grid, Point, Progress, check_budget, measure, pareto_flags, uniform
from optimizers.sweep import within as fits

# A few levels of each technique alone, gentle to harsh: the columns of the sensitivity map.
LEVELS: tuple[Techniques, ...] = (
    *(Techniques(pruning=PruningConfig(s)) for s in (0.5, 0.75, 0.9)),
    *(Techniques(clustering=ClusteringConfig(k)) for k in (16, 8, 4)),
    *(Techniques(quantization=QuantizationConfig(b)) for b in (8, 4, 2)),
)
# Measures no tensor: the search's answers skip the gzip figure (the recipe is measured in full).
NO_GZIP = GzipBasis(None, None, 0.0, ())


@dataclass(frozen=True)
class Score:
    """The model with one layer at ``setting``: its quality and output SNR."""

    setting: Techniques
    quality: float  # accuracy with labels, agreement with the original model without
    snr_db: float | None  # None when the outputs are unchanged


@dataclass(frozen=True)
class LayerSensitivity:
    layer: str
    params: int  # eligible weights of the layer
    scores: tuple[Score, ...]  # one per setting asked for, in that order

    @property
    def fragility(self) -> float:
        """Mean quality lost over the settings (compared within one call of ``sensitivity``)."""
        return -fmean(s.quality for s in self.scores)


def layers(prepared: explore.Prepared) -> dict[str, int]:
    """The layers that own eligible tensors, in model order, with their eligible weights."""
    out: dict[str, int] = {}
    for r in prepared.refs:
        out[r.layer] = out.get(r.layer, 0) + int(prepared.weights[r.index].size)
    return out


def only(layer: str, setting: Techniques, data_aware: bool = False) -> OptimizationConfig:
    """``setting`` on ``layer`` (``data_aware``: with calibration data), every other layer
    untouched."""
    return OptimizationConfig(overrides=((layer, setting),), data_aware=data_aware)


def without_gzip(prepared: explore.Prepared) -> explore.Prepared:
    """``prepared`` whose answers skip the gzip figure (``explore.run`` reports it as 0): the
    search compares quality and packed bytes only. Shares the model, clone and lock."""
    if prepared.x is None:
        raise ValueError("this needs evaluation data (an .npz with x and optionally y)")
    return replace(prepared, gzip=NO_GZIP)


def score(prepared: explore.Prepared, config: OptimizationConfig) -> tuple[float, float | None]:
    """(quality, output SNR) of ``config`` on ``prepared``'s data."""
    outcome = explore.run(prepared, config)
    assert outcome.fidelity is not None  # callers checked that there is data
    quality = outcome.fidelity.agreement if outcome.accuracy is None else outcome.accuracy
    return quality, outcome.fidelity.snr_db


def sensitivity(
    prepared: explore.Prepared,
    settings: Sequence[Techniques],
    on_step: Progress | None = None,
    data_aware: bool = False,
) -> list[LayerSensitivity]:
    """Every layer alone at each of ``settings`` (``data_aware``: with calibration data), most
    fragile layer first.

    >>> sensitivity(prepared, LEVELS)[0].layer  # doctest: +SKIP
    'classifier'
    """
    data = without_gzip(prepared)
    sizes = layers(prepared)
    total, done, rows = len(sizes) * len(settings), 0, []
    for layer, params in sizes.items():
        scores = []
        for setting in settings:
            scores.append(Score(setting, *score(data, only(layer, setting, data_aware))))
            done += 1
            if on_step is not None:
                on_step(done, total)
        rows.append(LayerSensitivity(layer, params, tuple(scores)))
    return sorted(rows, key=lambda r: -r.fragility)


Choice = dict[str, int]  # layer -> index of its setting


def assemble(
    choice: Mapping[str, Techniques], params: Mapping[str, int], data_aware: bool = False
) -> OptimizationConfig:
    """The recipe of per-layer settings: the setting of most weights is the base, float layers
    are skipped and the others are overrides (so the recipe reads as "this, except ...");
    ``data_aware``: with calibration data."""
    weight: dict[Techniques, int] = {}
    for layer, setting in choice.items():
        weight[setting] = weight.get(setting, 0) + params[layer]
    base = max(weight, key=lambda s: weight[s])
    skip = tuple(layer for layer, s in choice.items() if base.active and not s.active)
    overrides = tuple((layer, s) for layer, s in choice.items() if s.active and s != base)
    return replace(uniform(base, data_aware), skip=skip, overrides=overrides)


def layer_bits(
    prepared: explore.Prepared, setting: Techniques, data_aware: bool = False
) -> dict[str, int]:
    """Packed bits of each layer's eligible tensors at ``setting``."""
    outcome = explore.optimize(prepared, uniform(setting, data_aware))
    bits: dict[str, int] = {}
    for r in outcome.eligible:
        bits[r.layer] = bits.get(r.layer, 0) + packed_bits(outcome.weights[r.index], r)
    return bits


@dataclass
class Search:
    """The state of one recommendation: settings, per-layer costs and solo qualities, and a
    memo of whole-model qualities on the search half."""

    data: explore.Prepared
    settings: list[Techniques]
    params: dict[str, int]
    cost: dict[str, list[int]]  # layer -> packed bits at each setting
    solo: dict[str, list[float]]  # layer -> quality with only that layer at each setting
    reference: float
    budget: float
    tried: dict[tuple[int, ...], float]
    data_aware: bool = False

    def config(self, choice: Choice) -> OptimizationConfig:
        chosen = {layer: self.settings[i] for layer, i in choice.items()}
        return assemble(chosen, self.params, self.data_aware)

    def bits(self, choice: Choice) -> int:
        return sum(self.cost[layer][i] for layer, i in choice.items())

    def fits(self, choice: Choice) -> bool:
        key = tuple(choice.values())
        if key not in self.tried:
            self.tried[key] = score(self.data, self.config(choice))[0]
        return fits(self.tried[key], self.reference, self.budget)

    def frontier(self, layer: str) -> list[int]:
        """Settings of ``layer`` that no other setting beats alone on both bytes and quality."""
        flags = pareto_flags(self.cost[layer], self.solo[layer])
        return [i for i, f in enumerate(flags) if f]

    def descend(self, start: Choice) -> list[Choice]:
        """Greedy descent from ``start`` (which must fit): every choice it kept, in order."""
        current, kept, refused = dict(start), [dict(start)], set()
        fronts = {layer: self.frontier(layer) for layer in current}
        while True:
            moves = [
                (layer, i)
                for layer, front in fronts.items()
                for i in front
                if self.cost[layer][i] < self.cost[layer][current[layer]]
                and (layer, i) not in refused
            ]
            moves.sort(key=lambda m: -self.value(current, *m))
            for layer, i in moves:
                trial = {**current, layer: i}
                if self.fits(trial):
                    current = trial
                    kept.append(trial)
                    break
                refused.add((layer, i))
            else:
                return kept

    def value(self, current: Choice, layer: str, i: int) -> float:
        """Bits a move saves per quality it cost the layer alone (one sample's worth at least)."""
        saved = self.cost[layer][current[layer]] - self.cost[layer][i]
        lost = max(0.0, self.solo[layer][current[layer]] - self.solo[layer][i])
        return saved / (lost + 1 / len(self.data.x))


def recommend(
    prepared: explore.Prepared,
    budget: float = 1.0,
    grid: Grid | None = None,
    on_step: Callable[[str], None] | None = None,
) -> Point:
    """The smallest per-layer recipe found within ``budget`` points of the untouched model's
    quality, measured on all of ``prepared``'s data (its ``config`` is the recipe). Each layer
    takes one of ``grid``'s settings (data-aware ones when ``grid.data_aware``: ``prepared``
    must be calibrated). ``on_step(what)`` names each stage as it starts.

    >>> recommend(prepared, budget=1.0).config  # doctest: +SKIP
    """
    check_budget(budget)
    data = without_gzip(prepared)
    params = layers(prepared)
    if not params:
        return measure(prepared, OptimizationConfig())
    grid = grid or Grid()
    settings = [Techniques(), *(s for s in grid.settings() if s.active)]
    step = on_step or (lambda what: None)

    step("measuring each layer alone")
    solo_rows = sensitivity(data, settings, data_aware=grid.data_aware)
    by_layer = {row.layer: [s.quality for s in row.scores] for row in solo_rows}
    costs = [layer_bits(prepared, s, grid.data_aware) for s in settings]
    search = Search(
        data,
        settings,
        params,
        {layer: [c[layer] for c in costs] for layer in params},
        {layer: by_layer[layer] for layer in params},
        score(data, OptimizationConfig())[0],
        budget,
        {},
        grid.data_aware,
    )

    step("searching per-layer settings")
    untouched = dict.fromkeys(params, 0)
    starts = [untouched]
    uniform_fits = [i for i in range(1, len(settings)) if search.fits(dict.fromkeys(params, i))]
    if uniform_fits:
        best = min(uniform_fits, key=lambda i: search.bits(dict.fromkeys(params, i)))
        starts.append(dict.fromkeys(params, best))
    kept = [choice for start in starts for choice in search.descend(start)]

    best = min(kept, key=search.bits)
    return measure(prepared, search.config(best))


def sensitivity_to_dict(row: LayerSensitivity) -> dict[str, Any]:
    """JSON-able: the layer, its weights, and its quality and output SNR at each setting."""
    return {
        "layer": row.layer,
        "params": row.params,
        "levels": [
            {
                "setting": describe(s.setting),
                "recipe": techniques_to_dict(s.setting),
                "quality": s.quality,
                "output_snr_db": s.snr_db,
            }
            for s in row.scores
        ],
    }
