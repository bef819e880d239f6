"""The user's setting: one plain, frozen value from which every page, the address bar, the
report and the recipe are derived, so they cannot disagree.

A ``Setting`` holds what the controls hold (the three sliders, every advanced option, the layers
to skip and the per-layer recipe) and which model it is for. ``config`` is the
``OptimizationConfig`` that runs; ``words`` says it in plain words. The session keeps exactly one
``Setting`` (``ui.state``); widgets write their field of it, and code replaces it whole.

Field names are the widgets' session-state keys (``ui.state``), so a widget and its field are
one name.

>>> Setting(sparsity=60, clusters=16, bits=4).config.quantization.bits
4
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from optimizers.clustering import ClusteringConfig
from optimizers.pipeline import NO_TECHNIQUES, OptimizationConfig, Techniques, describe
from optimizers.pruning import PruningConfig
from optimizers.quantization import QuantizationConfig, takes_blocks

OFF = "Off"  # a clustering or quantization slider that is off
FLOAT = "float"  # a setting (or the layers of one) that applies nothing
STRUCTURED = "2:4"


@dataclass(frozen=True)
class ModelRef:
    """Which model a setting is for: a bundled ``sample`` travels in a link, an upload or a
    fine-tuned model does not. ``tuned_from`` names the model a fine-tuned one came from and
    the setting it was trained toward, in words."""

    name: str = ""
    sample: str | None = None
    tuned_from: str | None = None

    @property
    def travels(self) -> bool:
        return self.sample is not None and self.tuned_from is None


@dataclass(frozen=True)
class Setting:
    """Every choice of the user, as the controls show it (percent, ``OFF``, option names)."""

    sparsity: int = 0  # percent
    clusters: Any = OFF  # OFF or a cluster count
    bits: Any = OFF  # OFF or a bit width
    pruning_structure: str = PruningConfig().structure
    pruning_scope: str = PruningConfig().scope
    cluster_init: str = ClusteringConfig().init
    preserve_sparsity: bool = ClusteringConfig().preserve_sparsity
    cluster_granularity: str = ClusteringConfig().granularity
    quant_mode: str = QuantizationConfig().mode
    quant_granularity: str = QuantizationConfig().granularity
    block_size: Any = OFF  # OFF or inputs per block (per-channel grids only)
    data_aware: bool = OptimizationConfig().data_aware
    skip_layers: tuple[str, ...] = ()
    layer_overrides: tuple[tuple[str, Techniques], ...] = ()
    model: ModelRef = field(default_factory=ModelRef)

    @property
    def config(self) -> OptimizationConfig:
        """The config that runs (every stage may be off)."""
        prune = None
        if self.pruning_structure == STRUCTURED:
            prune = PruningConfig(0.5, STRUCTURED)
        elif self.sparsity > 0:
            structure = self.pruning_structure  # unstructured or channels: the slider's share
            scope = self.pruning_scope if structure == "unstructured" else "per-layer"
            prune = PruningConfig(round(self.sparsity / 100, 4), structure, scope)
        cluster = None
        if self.clusters != OFF:
            cluster = ClusteringConfig(
                int(self.clusters),
                init=self.cluster_init,
                preserve_sparsity=bool(self.preserve_sparsity),
                granularity=self.cluster_granularity,
            )
        quantize = None
        if self.bits != OFF:
            blockwise = self.block_size != OFF and takes_blocks(
                int(self.bits), self.quant_mode, self.quant_granularity
            )
            block = int(self.block_size) if blockwise else None
            quantize = QuantizationConfig(
                int(self.bits), self.quant_mode, self.quant_granularity, block
            )
        return OptimizationConfig(
            pruning=prune,
            clustering=cluster,
            quantization=quantize,
            skip=tuple(self.skip_layers),
            overrides=tuple(self.layer_overrides),
            data_aware=bool(self.data_aware),
        )

    @property
    def words(self) -> str:
        """The setting in words, per-layer recipe included (``config_words``)."""
        return config_words(self.config)

    @property
    def per_layer(self) -> bool:
        """Whether some layers run other than the sliders say."""
        return bool(self.skip_layers or self.layer_overrides)


def with_config(setting: Setting, config: OptimizationConfig) -> Setting:
    """``setting`` changed so that its ``config`` is ``config``; a stage that is off keeps its
    options, as the controls do."""
    p, c, q = config.pruning, config.clustering, config.quantization
    changes: dict[str, Any] = {
        "pruning_structure": p.structure if p else PruningConfig().structure,
        "sparsity": round(100 * p.sparsity) if p and p.structure != STRUCTURED else 0,
        "clusters": c.clusters if c else OFF,
        "bits": q.bits if q else OFF,
        "skip_layers": tuple(config.skip),
        "layer_overrides": tuple(config.overrides),
        "data_aware": config.data_aware,
    }
    if p:
        changes["pruning_scope"] = p.scope
    if c:
        changes |= {
            "cluster_init": c.init,
            "preserve_sparsity": c.preserve_sparsity,
            "cluster_granularity": c.granularity,
        }
    if q:
        changes |= {
            "quant_mode": q.mode,
            "quant_granularity": q.granularity,
            "block_size": OFF if q.block_size is None else q.block_size,
        }
    return replace(setting, **changes)


FIELDS = tuple(f.name for f in fields(Setting) if f.name != "model")


def recipe_words(config: OptimizationConfig) -> str:
    """``per-layer recipe: 3 layers with their own setting, 1 kept float``; empty when every
    layer follows the same setting."""
    parts = []
    if config.overrides:
        n = len(config.overrides)
        own = "its own setting" if n == 1 else "their own setting"
        parts.append(f"{n} layer{'' if n == 1 else 's'} with {own}")
    if config.skip:
        parts.append(f"{len(config.skip)} kept float")
    return f"per-layer recipe: {', '.join(parts)}" if parts else ""


def config_words(config: OptimizationConfig) -> str:
    """A config in words, truthful about a per-layer recipe: ``prune 50% → 4 clusters`` when
    every layer has it, ``per-layer recipe: 3 layers with their own setting; the others
    prune 50% → 4 clusters`` when layers differ; ``float`` for what applies nothing."""
    recipe, base = recipe_words(config), describe(config)
    if base == NO_TECHNIQUES:
        base = FLOAT
    if config.grid is not None and config.grid.block_size is not None:  # not after clustering
        base += f" in blocks of {config.grid.block_size}"
    if config.data_aware and base != FLOAT:
        base += ", calibrated"
    if not recipe:
        return base
    return f"{recipe}; the others {'stay float' if base == FLOAT else base}"
