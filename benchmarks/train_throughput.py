"""Training throughput: packed memmap data path vs a nibabel-per-sample loader.

Writes N synthetic gzipped float32 NIfTI maps on the MNI analysis grid (as
preprocessing does: an MNI GM probability map with per-subject noise), packs them
once with :func:`brainlens.packing.pack_volumes`, and then measures volumes per
second for one epoch of

* ``data only``: reading batches (and the model's 3D->2D transform, if any);
* each model: reading + forward + backward + optimizer step,

with three loaders: ``nibabel`` (``nib.load(path).get_fdata()`` per sample, a
DataLoader with ``num_workers`` workers), ``packed`` (memory-mapped .npy, read
per batch; 3D->2D transforms are cached after the first epoch, as in training
without augmentation) and, on CUDA, ``packed+gpu`` (the whole set preloaded on the GPU).

Usage::

    python benchmarks/train_throughput.py --resolution 2 --n 16 --models eitel_baseline_3d rao_2d
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from nilearn import datasets, image

from brainlens.grid import mni_grid
from brainlens.models import MODELS, build_model
from brainlens.packing import pack_volumes
from brainlens.training.dataset import PackedDataset
from brainlens.transforms import make_transform


def make_volumes(folder: Path, n: int, resolution: float, seed: int) -> list[Path]:
    shape, affine = mni_grid(resolution)
    gm = image.resample_img(
        datasets.load_mni152_gm_template(),
        target_affine=affine,
        target_shape=shape,
        interpolation="continuous",
        force_resample=True,
        copy_header=True,
    ).get_fdata(dtype=np.float32)
    gm /= max(float(gm.max()), 1e-6)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        v = gm * (1 + 0.05 * rng.standard_normal(shape, dtype=np.float32))
        v[gm <= 0.01] = 0
        p = folder / f"sub-{i:03d}_gm.nii.gz"
        nib.save(nib.Nifti1Image(v.astype(np.float32), affine), p)
        paths.append(p)
    return paths


class NibabelDataset(torch.utils.data.Dataset):
    """The naive loader: decode the gzipped NIfTI every time a sample is drawn."""

    def __init__(self, paths, labels, transform=None):
        self.paths, self.labels, self.transform = paths, labels, transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        v = nib.load(str(self.paths[i])).get_fdata(dtype=np.float32)[None]
        if self.transform is not None:
            v = self.transform(v)
        return torch.from_numpy(np.ascontiguousarray(v)), self.labels[i]


def run_epoch(batches, model, opt, device) -> float:
    """Seconds for one pass over ``batches`` (an iterable of (x, y))."""
    loss_fn = torch.nn.CrossEntropyLoss()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for x, y in batches:
        x, y = x.to(device, non_blocking=True), y.to(device)
        if model is not None:
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
                logits = model(x)
            loss = loss_fn(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--resolution", type=float, default=2.0)
    ap.add_argument("--n", type=int, default=16, help="number of volumes")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--models", nargs="*", default=["eitel_baseline_3d", "rao_2d"])
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers (nibabel)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="timed epochs (median reported)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        paths = make_volumes(tmp, args.n, args.resolution, args.seed)
        t_make = time.perf_counter() - t0
        ids = [p.name.split("_")[0] for p in paths]
        t0 = time.perf_counter()
        pack_volumes(paths, scan_ids=ids, out_npy=tmp / "gm.npy", out_index=tmp / "gm.tsv")
        t_pack = time.perf_counter() - t0
        gz_mb = sum(p.stat().st_size for p in paths) / 2**20
        npy_mb = (tmp / "gm.npy").stat().st_size / 2**20
        labels = [i % 2 for i in range(args.n)]
        packs = {"gm": (tmp / "gm.npy", tmp / "gm.tsv")}
        print(
            f"# device {device}, torch threads {args.threads}, grid {mni_grid(args.resolution)[0]}, "
            f"{args.n} volumes, batch {args.batch_size}"
        )
        print(
            f"# wrote gz NIfTI {gz_mb:.1f} MiB in {t_make:.1f} s; packed float16 "
            f"{npy_mb:.1f} MiB in {t_pack:.1f} s"
        )
        print(f"{'model':<20} {'loader':<12} {'vol/s':>9} {'speedup':>8}")
        for name in ["data only", *args.models]:
            spec = MODELS.get(name)
            tr_np = (
                make_transform(spec.transform, **dict(spec.transform_options))
                if spec is not None and spec.transform
                else None
            )

            def tr_t(x, tr_np=tr_np):
                return torch.as_tensor(tr_np(x.cpu().numpy())).to(x.device)

            loaders = {
                "nibabel": lambda tr_np=tr_np: torch.utils.data.DataLoader(
                    NibabelDataset(paths, labels, tr_np),
                    batch_size=args.batch_size,
                    shuffle=True,
                    num_workers=args.workers,
                ),
            }
            preloads = {"packed": False}
            if device.type == "cuda":
                preloads["packed+gpu"] = True
            for key, pre in preloads.items():
                ds = PackedDataset(
                    packs,
                    ids,
                    labels,
                    transform=tr_t if tr_np else None,
                    preload=pre,
                    device=device,
                )

                def packed_batches(ds=ds):
                    for idx in torch.randperm(len(ds)).split(args.batch_size):
                        yield ds.batch(idx), ds.targets(idx)

                loaders[key] = packed_batches
            x0 = next(iter(loaders["nibabel"]()))[0]
            model = opt = None
            if spec is not None:
                model = build_model(name, in_shape=tuple(x0.shape[1:]), n_classes=2).to(device)
                opt = torch.optim.Adam(model.parameters(), lr=1e-4)
            base = None
            for key, make in loaders.items():
                run_epoch(make(), model, opt, device)  # warm-up (page cache, cuDNN)
                secs = float(
                    np.median([run_epoch(make(), model, opt, device) for _ in range(args.repeats)])
                )
                rate = args.n / secs
                base = base or rate
                print(f"{name:<20} {key:<12} {rate:>9.1f} {rate / base:>7.1f}x", flush=True)


if __name__ == "__main__":
    main()
