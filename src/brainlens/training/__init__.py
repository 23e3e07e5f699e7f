"""Training per fold: :func:`train_fold` and :func:`load_trained_model`.

Modules, in the order a fold goes through them:

- :mod:`~brainlens.training.plan` -- :class:`~brainlens.training.plan.FoldPlan`:
  arguments checked and resolved (folds, class order, packs, device, transform,
  train/val datasets, class weights) before the first epoch;
- :mod:`~brainlens.training.determinism` -- device, threads, deterministic flags;
- :mod:`~brainlens.training.restart` -- one initialisation trained (or resumed) to the
  end, and the choice among restarts (:func:`~brainlens.training.restart.select_restart`);
- :mod:`~brainlens.training.loop` -- epochs, early stopping, prediction;
- :mod:`~brainlens.training.checkpoint` -- checkpoints, their fingerprint, RNG state;
- :mod:`~brainlens.training.outputs` -- history/restarts tables, learning curve,
  ``model.pt`` (and :func:`load_trained_model`), predictions, metrics;
- :mod:`~brainlens.training.fold` -- :func:`train_fold`, tying them together;
- :mod:`~brainlens.training.dataset` -- :class:`~brainlens.training.dataset.PackedDataset`;
- :mod:`~brainlens.training.augment` -- flips and shifts on the 3D grid.
"""

from brainlens.training.augment import Augmenter, make_augmenter
from brainlens.training.fold import train_fold
from brainlens.training.loop import EarlyStopping, TrainingInterrupted, make_early_stopping
from brainlens.training.outputs import load_trained_model
from brainlens.training.restart import select_restart

__all__ = [
    "Augmenter",
    "EarlyStopping",
    "TrainingInterrupted",
    "load_trained_model",
    "make_augmenter",
    "make_early_stopping",
    "select_restart",
    "train_fold",
]
