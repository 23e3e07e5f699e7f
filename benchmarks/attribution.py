"""Cost of each attribution method for one 2 mm MNI scan (1 x 91 x 109 x 91).

Prints forward passes (samples through the model, incl. the validation pass)
and wall seconds per scan per method, for an untrained registry model (the
cost does not depend on the weights). The atlas for ``region_occlusion`` is a
synthetic block atlas with about as many regions as AAL (``--regions``).

Example::

    .venv/bin/python benchmarks/attribution.py --threads 1
    .venv/bin/python benchmarks/attribution.py --methods gradients gradcam --model tiny
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from brainlens.attribution import METHODS, attribute, count_forward_passes
from brainlens.grid import mni_grid


class TinyCNN3D(nn.Module):
    """3 conv blocks (8/16/32 channels, 3x3x3, ReLU, max-pool 2) + GAP + linear."""

    def __init__(self, n_classes: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = 1
        for f in (8, 16, 32):
            layers += [nn.Conv3d(prev, f, 3, padding=1), nn.ReLU(), nn.MaxPool3d(2)]
            prev = f
        self.features = nn.Sequential(*layers)
        self.cam_layer = self.features[-2]
        self.head = nn.Sequential(nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(prev, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def block_atlas(shape: tuple[int, int, int], n_regions: int) -> np.ndarray:
    """Labels 1..K of a regular block partition with about ``n_regions`` blocks."""
    k = max(1, round(n_regions ** (1 / 3)))
    edges = [np.linspace(0, n, k + 1).astype(int) for n in shape]
    labels = np.zeros(shape, np.int32)
    idx = 1
    for i in range(k):
        for j in range(k):
            for m in range(k):
                labels[
                    edges[0][i] : edges[0][i + 1],
                    edges[1][j] : edges[1][j + 1],
                    edges[2][m] : edges[2][m + 1],
                ] = idx
                idx += 1
    return labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="rieke2018_3d", help="registry name or 'tiny'")
    parser.add_argument(
        "--methods",
        nargs="+",
        default=[m for m in METHODS if not METHODS[m].returns_dict],
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--occlusion-patch", type=int, default=16)
    parser.add_argument("--ig-steps", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--regions", type=int, default=125)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    shape, _ = mni_grid(2.0)
    if args.model == "tiny":
        model = TinyCNN3D()
    else:
        from brainlens.models import build_model

        model = build_model(args.model, in_shape=(1, *shape), n_classes=2)
    model.eval()
    x = torch.rand((1, 1, *shape), generator=torch.Generator().manual_seed(args.seed))
    atlas = block_atlas(shape, args.regions)
    options = {
        "integrated_gradients": {"n_steps": args.ig_steps, "internal_batch_size": args.batch_size},
        "occlusion": {"patch": args.occlusion_patch, "batch_size": args.batch_size},
        "region_occlusion": {"atlas_labels": atlas, "batch_size": args.batch_size},
    }
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"model={args.model} params={n_params} input=1x{'x'.join(map(str, shape))} "
        f"threads={args.threads} torch={torch.__version__} regions={int(atlas.max())}"
    )
    with count_forward_passes(model) as c, torch.no_grad():
        t0 = time.perf_counter()
        model(x)
        fwd = time.perf_counter() - t0
    print(f"one forward pass: {fwd:.3f} s ({c.samples} sample)")
    print(f"{'method':<22}{'options':<40}{'forward_passes':>15}{'seconds':>10}{'s/pass':>9}")
    for method in args.methods:
        opts = options.get(method, {})
        with count_forward_passes(model) as counter:
            t0 = time.perf_counter()
            attribute(model, x, method=method, target=1, **opts)
            seconds = time.perf_counter() - t0
        shown = {k: v for k, v in opts.items() if k != "atlas_labels"}
        print(
            f"{method:<22}{str(shown):<40}{counter.samples:>15}{seconds:>10.2f}"
            f"{seconds / counter.samples:>9.3f}"
        )


if __name__ == "__main__":
    main()
