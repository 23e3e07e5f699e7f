"""What the synthetic demo dataset looks like (:class:`DemoSpec`)."""

from __future__ import annotations

from dataclasses import dataclass

from brainlens.errors import ConfigError


@dataclass(frozen=True)
class DemoSpec:
    """What the synthetic dataset looks like.

    Attributes
    ----------
    n_subjects : int
        Number of participants (half patients, rounded down).
    n_second_session : int
        How many participants get a second session. When > 0 every participant has
        ``ses-01`` (BIDS requires one layout per dataset).
    voxel_size : float
        Native voxel size in mm.
    atlas, region : str
        Where the effect is planted: an atlas from :mod:`brainlens.atlases` and a
        region name exactly as in its label table.
    effect : float
        Fraction of tissue replaced by CSF-like signal in the region (0-1).
    shrink : float
        Radial contraction of the region per unit effect.
    deformation_mm : float
        Typical amplitude of the subject's smooth nonlinear deformation.
    rotation_deg, translation_mm, scale : float
        Ranges of the random head position.
    bias : float
        Amplitude of the multiplicative bias field (0.3 = +-30 %).
    noise : float
        Rician noise sigma as a fraction of white-matter intensity.
    label_column : str
        Name of the diagnosis column in ``participants.tsv``.
    id_prefix : str
        Letters/digits put before each participant number (``sub-<prefix>001``), so a
        second demo dataset (an external test set, ``brainlens demo --id-prefix ext``)
        shares no participant ID with the first.
    """

    n_subjects: int = 40
    n_second_session: int = 4
    voxel_size: float = 1.5
    atlas: str = "aal"
    region: str = "Temporal_Inf_L"
    effect: float = 0.9
    shrink: float = 0.3
    deformation_mm: float = 1.5
    rotation_deg: float = 8.0
    translation_mm: float = 8.0
    scale: float = 0.03
    bias: float = 0.25
    noise: float = 0.03
    label_column: str = "diagnosis"
    id_prefix: str = ""

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad field."""
        checks = [
            ("n_subjects", self.n_subjects >= 4, "an integer >= 4"),
            ("n_second_session", 0 <= self.n_second_session <= self.n_subjects, "0..n_subjects"),
            ("voxel_size", 0.8 <= self.voxel_size <= 4.0, "0.8..4 mm"),
            ("effect", 0.0 <= self.effect <= 1.0, "0..1"),
            ("shrink", 0.0 <= self.shrink <= 0.8, "0..0.8"),
            ("bias", 0.0 <= self.bias < 1.0, "0..<1"),
            ("noise", 0.0 <= self.noise <= 0.5, "0..0.5"),
            ("id_prefix", all(c.isascii() and c.isalnum() for c in self.id_prefix), "A-Za-z0-9"),
        ]
        for key, ok, allowed in checks:
            if not ok:
                raise ConfigError(f"demo.{key}: expected {allowed}, got {getattr(self, key)!r}")
