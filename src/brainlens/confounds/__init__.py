"""Covariates, TIV, and in-fold confound removal and site harmonisation.

Modules (this ``__init__`` imports none of them, so a rule that needs only the TIV
table does not pull in ComBat's dependency):

:mod:`brainlens.confounds.covariates`
    The top-level ``covariates:`` config key: participants.tsv columns (numeric or
    categorical) plus ``tiv``; validation with errors that name the column and the
    bad value; encoding fitted on the rows of the training part.
:mod:`brainlens.confounds.tiv`
    Total intracranial volume (mL) from the Jacobian-modulated GM, WM and CSF maps.
:mod:`brainlens.confounds.residualize`
    Per-feature OLS on the covariates, fitted on training rows, applied to any row.
:mod:`brainlens.confounds.combat`
    ComBat (neuroCombat 0.2.12) fitted on training rows; a pure numpy apply step.
:mod:`brainlens.confounds.infold`
    One fold's fit, its saved parameters (``.npz`` + ``.json`` listing the fit rows),
    the leakage audit and the config checks (``confounds:``).
:mod:`brainlens.confounds.inputs`
    The same for the CNN inputs (every voxel of every ``train.inputs`` channel): the
    fit, and :class:`~brainlens.confounds.inputs.InputConfounds`, the audited per-sample
    transform of training and attribution.
"""
