"""Classical baselines on the CNNs' folds and metrics (scikit-learn, no torch).

Three models, selected and tested exactly like the CNNs (fit on the fold's training
part, regularisation chosen on its validation part, test part predicted once):

``linear_svm_voxels``
    L2-regularised linear classifier on the smoothed modulated grey-matter voxels
    inside the template brain mask; its weights are turned into an activation
    pattern (Haufe et al. 2014) that goes through the region tables.
``linear_svm_regions``
    The same on regional grey-matter volumes (mL) of one atlas.
``confounds_only``
    The same on covariates of ``participants.tsv`` alone (age, sex, site, ...).

The classifier is an L2 logistic regression (a linear SVM's hinge loss gives no
probabilities, which the validation loss, ROC AUC and the per-subject averaging of
sessions need); the model names keep the issue's ``linear_svm_*`` family name.
Modules: :mod:`brainlens.linear.features` (torch-free pack reading, feature
matrices), :mod:`brainlens.linear.confounds` (in-fold confound removal of the voxel and
region features, :mod:`brainlens.confounds`) and :mod:`brainlens.linear.fit`
(selection, outputs, pattern).
"""

from brainlens.linear.confounds import apply_fold_confounds, write_fold_confounds
from brainlens.linear.features import LINEAR_MODELS, check_covariates
from brainlens.linear.fit import haufe_pattern, select_and_fit, train_linear_fold, write_pattern

__all__ = [
    "LINEAR_MODELS",
    "apply_fold_confounds",
    "check_covariates",
    "haufe_pattern",
    "select_and_fit",
    "train_linear_fold",
    "write_fold_confounds",
    "write_pattern",
]
