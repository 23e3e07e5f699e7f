"""One exception hierarchy for brainlens.

Every error that a user can cause (bad input file, bad config value, leakage in a
split) derives from :class:`BrainlensError`. Messages name the file or key, the
problem and the fix, so a Snakemake log line is enough to act on.
"""

from __future__ import annotations

from pathlib import Path


class BrainlensError(Exception):
    """Base class of all brainlens errors."""


class InputFileError(BrainlensError):
    """An input file is missing, unreadable or not what was expected.

    Parameters
    ----------
    path : str or Path
        The offending file.
    problem : str
        What is wrong, ideally "expected X, got Y".
    fix : str
        What the user should do about it.
    """

    def __init__(self, path: str | Path, problem: str, fix: str) -> None:
        self.path = str(path)
        self.problem = problem
        self.fix = fix
        super().__init__(f"{self.path}: {problem}. Fix: {fix}")


class DatasetError(BrainlensError):
    """The dataset as a whole is inconsistent (IDs, participants table vs files)."""


class ConfigError(BrainlensError):
    """A configuration value is invalid."""


class LeakageError(BrainlensError):
    """A split or training protocol lets test information leak into training."""


class PreprocessingError(BrainlensError):
    """A preprocessing step failed for one scan."""


class ModelError(BrainlensError):
    """A model cannot be built or does not fit its input."""
