"""Training per fold: :func:`train_fold` and :func:`load_trained_model`.

Modules: :mod:`~brainlens.training.fold` (orchestration, outputs, resume),
:mod:`~brainlens.training.loop` (epochs, early stopping, prediction) and
:mod:`~brainlens.training.augment` (flips and shifts on the 3D grid).
"""

from brainlens.training.augment import Augmenter, make_augmenter
from brainlens.training.fold import load_trained_model, train_fold
from brainlens.training.loop import EarlyStopping, TrainingInterrupted, make_early_stopping

__all__ = [
    "Augmenter",
    "EarlyStopping",
    "TrainingInterrupted",
    "load_trained_model",
    "make_augmenter",
    "make_early_stopping",
    "train_fold",
]
