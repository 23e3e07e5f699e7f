"""Derive every stage's seed from the one master seed in the config."""

from __future__ import annotations

import hashlib


def derive_seed(master: int, *names: object) -> int:
    """A stable 31-bit seed for one stage (and item) from the master seed.

    Parameters
    ----------
    master : int
        The config's ``seed``.
    *names : object
        Stage name and item keys, e.g. ``("train", "rieke2018_3d", 3)``.

    Returns
    -------
    int
        In ``[1, 2**31 - 1)``; the same inputs always give the same seed, and different
        names give unrelated seeds (SHA-256 of the joined names).
    """
    key = "/".join([str(int(master)), *map(str, names)]).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "little") % (2**31 - 2) + 1
