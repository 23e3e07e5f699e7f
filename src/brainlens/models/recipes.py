"""The papers' training recipes, and ``train.recipe: config | paper``.

Each registry model carries the training recipe its paper states (:class:`Recipe`), each
value with its paper section and ``None`` where the paper does not state it.
:func:`resolve_train_settings` gives the settings one model is trained with: the
``train`` block as written (``config``), or with the keys the paper states replaced by
the paper's values (``paper``, see :data:`APPLIED_FIELDS`). The paper's input (tissue
maps, grid) is checked, never changed: ``train.inputs`` and ``preprocess.resolution`` are
shared by every model of a run and drive the preprocessing and packing jobs. A paper's
stopping rule is recorded, not applied: training always selects the epoch with the best
validation value (``train.early_stopping``, from the config).

The module imports no torch (the workflow resolves the settings at parse time, and
``brainlens.models`` loads its registry only on first use).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, Final

from brainlens.errors import ConfigError

#: Values of ``train.recipe``.
RECIPE_NAMES: Final = ("config", "paper")

#: Recipe fields that become ``train`` keys under ``recipe: paper`` (field -> key path).
APPLIED_FIELDS: Final = MappingProxyType(
    {
        "optimizer": ("optimizer",),
        "lr": ("lr",),
        "batch_size": ("batch_size",),
        "epochs": ("epochs",),
        "weight_decay": ("weight_decay",),
        "dropout": ("model_options", "dropout"),
        "flip_axes": ("augmentation", "flip_axes"),
        "shift_voxels": ("augmentation", "shift_voxels"),
        "transform": ("transform",),
    }
)


@dataclass(frozen=True)
class Recipe:
    """One paper's training recipe; ``None`` = not stated by the paper.

    Attributes
    ----------
    paper : str
        Short citation of the paper the recipe comes from.
    optimizer : str or None
        ``"adam"`` or ``"adamw"`` (the names ``train.optimizer`` takes).
    lr, batch_size, epochs : float, int, int or None
        Learning rate, mini-batch size, training epochs.
    stopping : str or None
        The stopping rule as the paper states it (recorded, not applied).
    weight_decay : float or None
        L2 weight decay.
    dropout : float or None
        The builder's ``dropout`` option (``train.model_options.dropout``).
    flip_axes, shift_voxels : tuple of int, int or None
        Random flips along these (X, Y, Z) RAS+ axes (0 = left-right); random shifts in
        voxels (0 = no translation).
    inputs : tuple of str or None
        The project's ``train.inputs`` that match the paper's input, in channel order.
    volume_shape : tuple of int or None
        (X, Y, Z) voxel grid the paper's 3D network was trained on; checked against the
        config's grid for 3D models.
    transform : Mapping or None
        2D models: ``train.transform`` giving the paper's image (name and stated options);
        its ``size`` (H, W) is the paper's image size and must hold the whole projected
        plane of the config's grid (no cropping).
    sources : Mapping of str to str
        Field name -> the paper section it comes from (every stated field has one).
    departures : str
        Where this project departs from the paper, and why.
    """

    paper: str
    optimizer: str | None = None
    lr: float | None = None
    batch_size: int | None = None
    epochs: int | None = None
    stopping: str | None = None
    weight_decay: float | None = None
    dropout: float | None = None
    flip_axes: tuple[int, ...] | None = None
    shift_voxels: int | None = None
    inputs: tuple[str, ...] | None = None
    volume_shape: tuple[int, int, int] | None = None
    transform: Mapping[str, Any] | None = None
    sources: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    departures: str = ""

    def stated(self) -> dict[str, Any]:
        """The fields the paper states (not ``None``), without the citation and notes."""
        skip = {"paper", "sources", "departures"}
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in skip and getattr(self, f.name) is not None
        }

    def brief(self) -> str:
        """One line of the stated values (``brainlens models``); sections in :attr:`sources`."""
        parts = [f"{k}={_fmt(v)}" for k, v in self.stated().items() if k != "stopping"]
        return ", ".join(parts) if parts else "no training settings stated"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, Mapping):
        opts = {k: v for k, v in value.items() if k not in ("name", "size")}
        return f"{value['name']}({', '.join(f'{k}={v}' for k, v in opts.items())}) size={value['size']}"
    if isinstance(value, tuple) and all(isinstance(v, int) for v in value) and len(value) > 2:
        return "x".join(map(str, value))
    if isinstance(value, tuple):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


def _src(**kw: str) -> Mapping[str, str]:
    return MappingProxyType(dict(kw))


_NG = Recipe(
    paper="Ng et al. 2018 (ICANN)",
    optimizer="adam",
    lr=1e-4,
    batch_size=2,
    epochs=50,
    stopping="fixed 50 epochs",
    inputs=("wm_modulated",),
    volume_shape=(121, 145, 121),
    sources=_src(
        optimizer="§2.2",
        lr="§2.2",
        batch_size="§2.2",
        epochs="§2.2",
        stopping="§2.2",
        inputs="§2.1 (CAT12 'mwc2', modulated WM)",
        volume_shape="§2.1, §2.2",
    ),
    departures="§2.2 gives the input as 2 channels while §2.1 names one map (modulated WM); "
    "the recipe follows §2.1 (one wm_modulated channel). The paper's 121x145x121 is this "
    "project's 1.5 mm grid. One 80/10/10 split there; cross-validation here.",
)

_RIEKE = Recipe(
    paper="Rieke et al. 2018 (poster)",
    optimizer="adam",
    lr=1e-4,
    batch_size=5,
    epochs=20,
    stopping="fixed 20 epochs",
    dropout=0.8,
    inputs=("t1w",),
    sources=_src(
        optimizer="Methods: Model",
        lr="Methods: Model",
        batch_size="Methods: Model",
        epochs="Methods: Model",
        stopping="Methods: Model",
        dropout="Methods: Model (before the 1st FC layer)",
        inputs="Methods: overview and preprocessing (registered, skull-stripped T1w)",
    ),
    departures="Grid not stated (ADNI images registered to a template). The demo config "
    "trains on gm_modulated with dropout 0.5: 0.8 underfits ~28 training subjects.",
)

_EITEL_DEPARTURES = (
    "The paper tuned learning rate, weight decay, filters and dropout per task without "
    "reporting them, and stopped early (criterion not reported): those keep the config's "
    "values. 'Horizontal' flips are taken as left-right (axis 0), which lateralized: true "
    "forbids."
)

_EITEL_BASELINE = Recipe(
    paper="Eitel et al. 2019",
    stopping="early stopping (criterion and patience not reported)",
    flip_axes=(0,),
    sources=_src(stopping="§4, §5 Table 1", flip_axes="§4 (horizontal flips)"),
    departures=_EITEL_DEPARTURES + " The paper also translated the baseline's inputs by an "
    "amount it does not state: shift_voxels keeps the config's value.",
)

_PIF = Recipe(
    paper="Eitel et al. 2019",
    stopping="early stopping (criterion and patience not reported)",
    flip_axes=(0,),
    shift_voxels=0,
    sources=_src(
        stopping="§4, §5 Table 1",
        flip_axes="§4 (horizontal flips)",
        shift_voxels="§4 (only flips for PIF)",
    ),
    departures=_EITEL_DEPARTURES,
)

_XING_SHARED = _src(
    optimizer="§4 (betas 0.9, 0.999)",
    lr="§4",
    epochs="§4, §4.3",
    stopping="§4",
    inputs="§4 (normalised, masked, N3-corrected T1)",
)


def _xing_2d(transform: str, what: str) -> Recipe:
    return Recipe(
        paper="Xing et al. (ECCV submission)",
        optimizer="adam",
        lr=1e-4,
        batch_size=16,
        epochs=150,
        stopping="fixed 150 epochs",
        dropout=0.5,
        inputs=("t1w",),
        transform=MappingProxyType(
            {"name": transform, "axis": "z", "size": 110, "repeat_channels": 3}
        ),
        sources=_src(
            **_XING_SHARED,
            batch_size="§4",
            dropout="§3.3",
            transform=f"§3.2 (z axis), §4.1 (110x110x3 {what})",
        ),
        departures="The paper's volumes are 110x110x110 (ADNI); here the image is the "
        "projection of the MNI grid zero-padded to 110x110 (2 or 4 mm; finer grids would "
        "be cropped and are refused). ImageNet VGG11 weights are not shipped: pass "
        "model_options.pretrained=<file>, else random init. Weight decay not stated.",
    )


def _xing_3d(what: str) -> Recipe:
    return Recipe(
        paper="Xing et al. (ECCV submission), 3D baselines",
        optimizer="adam",
        lr=1e-4,
        batch_size=8,
        epochs=150,
        stopping="fixed 150 epochs",
        inputs=("t1w",),
        volume_shape=(110, 110, 110),
        sources=_src(**_XING_SHARED, batch_size="§4 (baselines)", volume_shape="§4"),
        departures=f"Korolev et al.'s own paper is not in the reference set; the recipe is "
        f"Xing et al.'s training of their {what} baseline. Its 110x110x110 volumes are on no "
        f"grid of this project, so recipe: paper is refused for this model; copy the "
        f"optimisation values into the config with recipe: config.",
    )


_RAO_INPUT = "§3.1 (grey matter segmentation, registered to standard space)"

#: Model name -> its paper's recipe (the registry's ``ModelSpec.recipe``).
RECIPES: Final[Mapping[str, Recipe]] = MappingProxyType(
    {
        "ng2018_3d": _NG,
        "rieke2018_3d": _RIEKE,
        "eitel_baseline_3d": _EITEL_BASELINE,
        "pif_3d": _PIF,
        "vgg3d": _xing_3d("3D-VGG"),
        "resnet3d": _xing_3d("3D-ResNet"),
        "rao_2d": Recipe(
            paper="Rao (replication of Gleichgerrcht et al. 2021)",
            dropout=0.0,
            inputs=("gm",),
            transform=MappingProxyType({"name": "coronal_slices", "count": 1, "size": 160}),
            sources=_src(
                dropout="§3.2 Fig. 2 (no dropout layer)",
                inputs=_RAO_INPUT,
                transform="§2.1 (one coronal slice), §3.2 Fig. 2 (160x160)",
            ),
            departures="Optimizer, learning rate, batch size and epochs are not reported: "
            "they keep the config's values. Which coronal slice is not stated (the "
            "transform's default, the middle one). Stratified k-fold as in §3.2.",
        ),
        "rao_2d_deep": Recipe(
            paper="Rao (deeper model)",
            inputs=("gm",),
            transform=MappingProxyType({"name": "coronal_slices", "count": 1, "size": 160}),
            sources=_src(inputs=_RAO_INPUT, transform="§5 Fig. 9 (160x160)"),
            departures="Optimizer settings and the dropout rate are not reported (config's "
            "values). §5 re-weighted the classes without giving the weights: "
            "train.class_weights keeps the config's value.",
        ),
        "dynimg_vgg11_att": _xing_2d("dynamic_image", "dynamic image"),
        "avgpool_vgg11": _xing_2d("avg_pool", "average projection"),
        "maxpool_vgg11": _xing_2d("max_pool", "maximum projection"),
    }
)


class TrainSettings(dict):
    """The settings one model is trained with: a plain ``dict`` of ``train`` keys.

    Attributes
    ----------
    from_paper : Mapping of str to str
        Dotted key (``"lr"``, ``"model_options.dropout"``) -> the paper section its value
        comes from; empty for ``recipe: config``.
    """

    from_paper: Mapping[str, str]

    def __init__(self, settings: Mapping[str, Any], from_paper: Mapping[str, str]) -> None:
        super().__init__(settings)
        self.from_paper = dict(from_paper)  # a plain dict: the settings stay picklable


def recipe_of(model: str) -> Recipe:
    """The paper recipe of a registry model.

    Raises
    ------
    ConfigError
        ``model`` is not a registry model (the message lists them).
    """
    if model not in RECIPES:
        raise ConfigError(
            f"train.model {model!r} has no paper recipe: expected one of {sorted(RECIPES)}. "
            f"Fix: pick a registry model (brainlens models lists them)."
        )
    return RECIPES[model]


def _paper_values(model: str, recipe: Recipe) -> str:
    stated = {k: v for k, v in recipe.stated().items() if k in APPLIED_FIELDS}
    return ", ".join(f"{'.'.join(APPLIED_FIELDS[k])}={_fmt(v)}" for k, v in stated.items())


def _check_inputs(model: str, recipe: Recipe, inputs: Any) -> None:
    if recipe.inputs is None or list(inputs) == list(recipe.inputs):
        return
    raise ConfigError(
        f"train.recipe: paper for model {model!r}: the paper ({recipe.paper}, "
        f"{recipe.sources['inputs']}) trained on {list(recipe.inputs)}, but train.inputs is "
        f"{list(inputs)}; recipe: paper never changes the inputs (they are shared by every "
        f"model of the run). Fix: set train.inputs: {list(recipe.inputs)}, or use "
        f"train.recipe: config."
    )


def _check_volume(model: str, recipe: Recipe, resolution: float) -> None:
    from brainlens.grid import RESOLUTIONS, mni_grid

    shape = tuple(mni_grid(resolution)[0])
    if recipe.volume_shape is None or shape == tuple(recipe.volume_shape):
        return
    grids = {float(r): tuple(mni_grid(r)[0]) for r in RESOLUTIONS}
    match = [r for r, s in grids.items() if s == tuple(recipe.volume_shape)]
    want = "x".join(map(str, recipe.volume_shape))
    fix = (
        f"set preprocess.resolution: {match[0]:g}"
        if match
        else f"no preprocess.resolution gives it ({', '.join(f'{r:g} mm: {s}' for r, s in grids.items())}), "
        f"so use train.recipe: config with the paper's values ({_paper_values(model, recipe)})"
    )
    raise ConfigError(
        f"train.recipe: paper for model {model!r}: the paper ({recipe.paper}, "
        f"{recipe.sources['volume_shape']}) trained on {want} volumes, but "
        f"preprocess.resolution: {resolution:g} gives {shape}. Fix: {fix}."
    )


def _paper_transform(
    model: str, recipe: Recipe, train: Mapping[str, Any], resolution: float
) -> dict[str, Any]:
    """The config's transform with the paper's stated options; checks that nothing is cropped."""
    from brainlens.grid import mni_grid
    from brainlens.transforms import output_shape

    stated = dict(recipe.transform or {})
    given = dict(train.get("transform") or {})
    # options the paper does not state (e.g. the slice) keep the config's, same transform only
    merged = {**(given if given.get("name") == stated["name"] else {}), **stated}
    name, opts = merged.pop("name"), merged
    size = opts.pop("size")
    volume = (len(train["inputs"]), *mni_grid(resolution)[0])
    _, h, w = output_shape(name, volume, **opts)
    if h > size or w > size:
        raise ConfigError(
            f"train.recipe: paper for model {model!r}: the paper's {size}x{size} image "
            f"({recipe.sources['transform']}) would crop the {h}x{w} plane of "
            f"preprocess.resolution: {resolution:g} (the transform pads or crops, never "
            f"resamples). Fix: set preprocess.resolution to a coarser grid (2 or 4), or use "
            f"train.recipe: config."
        )
    return {"name": name, **opts, "size": size}


def resolve_train_settings(
    model: str, train: Mapping[str, Any], *, resolution: float, lateralized: bool
) -> TrainSettings:
    """The ``train`` settings one model is trained with under ``train.recipe``.

    Parameters
    ----------
    model : str
        Registry model name (:data:`RECIPES`).
    train : mapping
        The validated config's ``train`` block (with ``recipe``, ``inputs`` and the
        optimisation keys; the schema fills them in). Not changed.
    resolution : float
        ``preprocess.resolution`` (mm): the grid a paper's stated input is checked against.
    lateralized : bool
        The config's ``lateralized``: a paper's left-right flips are refused with it.

    Returns
    -------
    TrainSettings
        A ``dict``: for ``recipe: config`` exactly ``train`` without ``recipe``; for
        ``recipe: paper`` a deep copy in which the keys the paper states (see
        :data:`APPLIED_FIELDS`) hold the paper's values, and ``from_paper`` records which.

    Raises
    ------
    ConfigError
        ``recipe`` missing or not one of :data:`RECIPE_NAMES`; an unknown model; with
        ``paper``: inputs or grid that do not match the paper's, an image size that would
        crop the grid, or a left-right flip with ``lateralized``.
    """
    if "recipe" not in train:
        raise ConfigError(
            "train.recipe is missing. Fix: validate the config against "
            "workflow/schemas/config.schema.yaml (default: config) or set train.recipe."
        )
    name = train["recipe"]
    if name not in RECIPE_NAMES:
        raise ConfigError(
            f"train.recipe: expected one of {list(RECIPE_NAMES)}, got {name!r}. Fix: config "
            f"(the train block as written) or paper (the model's paper recipe)."
        )
    recipe = recipe_of(model)
    settings = {k: v for k, v in train.items() if k != "recipe"}
    if name == "config":
        return TrainSettings(settings, {})
    _check_inputs(model, recipe, train["inputs"])
    if recipe.transform is None:
        _check_volume(model, recipe, resolution)
    if lateralized and recipe.flip_axes and 0 in recipe.flip_axes:
        raise ConfigError(
            f"train.recipe: paper for model {model!r}: the paper flips left-right "
            f"({recipe.sources['flip_axes']}), which lateralized: true forbids (it would "
            f"swap the labels' meaning). Fix: use train.recipe: config."
        )
    settings = copy.deepcopy(settings)
    values = recipe.stated()
    if recipe.transform is not None:
        values["transform"] = _paper_transform(model, recipe, train, resolution)
    from_paper: dict[str, str] = {}
    for key, path in APPLIED_FIELDS.items():
        if key not in values:
            continue
        value = list(values[key]) if isinstance(values[key], tuple) else values[key]
        target = settings
        for part in path[:-1]:
            target[part] = dict(target.get(part) or {})
            target = target[part]
        target[path[-1]] = value
        from_paper[".".join(path)] = recipe.sources[key]
    return TrainSettings(settings, from_paper)


def train_params(config: Mapping[str, Any], model: str) -> TrainSettings:
    """The ``train`` params of the workflow's ``train_model`` rule for one model.

    Parameters
    ----------
    config : mapping
        The validated workflow config (``train``, ``preprocess.resolution``,
        ``lateralized``).
    model : str
        Registry model name.

    Returns
    -------
    TrainSettings
        :func:`resolve_train_settings` without ``model``, ``inputs`` and ``gpus`` (the rule
        passes the inputs on their own; ``gpus`` is a cluster resource).

    Raises
    ------
    ConfigError
        As :func:`resolve_train_settings`.
    """
    settings = resolve_train_settings(
        model,
        config["train"],
        resolution=config["preprocess"]["resolution"],
        lateralized=config["lateralized"],
    )
    keep = {k: v for k, v in settings.items() if k not in ("model", "inputs", "gpus")}
    return TrainSettings(keep, settings.from_paper)
