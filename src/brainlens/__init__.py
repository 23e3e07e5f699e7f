"""brainlens: leakage-free CNN classification of T1w brain MRI and atlas-region attribution."""

__version__ = "0.1.0"
