"""Benchmark of the T1w preprocessing: seconds per step, peak memory, quality.

Runs ``brainlens.preprocess.run_t1w_preproc`` on one head at each grid resolution and
skull-strip method, each scan in a fresh child process (so peak RSS is per scan), plus
the reference: antspyx ``ants.registration(type_of_transform="SyN")`` (its defaults,
after antspyx's default N4) of the same brain to the 1 mm template. Registration quality
is the Pearson r with the template inside the template brain mask, computed on the
1.5 mm grid for every row so that rows compare.

Heads (``--source``): ``phantom`` (the FSL head template warped; true mask known, the
reference uses it), ``demo`` (a ``brainlens.synthetic`` demo head) and ``colin27``
(Colin27, a real 1 mm head from Debian's mricron-data; ``dice`` is against ``ch2bet``).
For ``demo`` and ``colin27`` the reference registers the deepbet brain, as the pipeline
does. ``--repeat N`` runs every row N times and reports the median wall time (the
machine's timing noise is several seconds per scan).

Usage::

    python benchmarks/preprocess.py --source demo --res 1.5 2 \
        --methods deepbet ants_template --voxel 1.5 --threads 2 --seed 1 --repeat 3 \
        --out /tmp/bench_preproc

``--segmentation-grid native analysis`` adds rows with Atropos on the scan's grid
coarsened to the analysis grid (``preprocess.segmentation_grid``); ``GM_ml`` is the
native GM volume each row measured.

Prints one table; writes ``results.json`` into ``--out``. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path


def _load_avg() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def _corr_on_grid(warped_brain: Path, templates_15: dict) -> float:
    """r of a warped brain (any MNI grid) with the 1.5 mm template inside its mask."""
    import nibabel as nib
    import numpy as np

    from brainlens.grid import mni_grid
    from brainlens.preprocess.core import masked_corr
    from brainlens.templates import resample_to_grid

    shape, affine = mni_grid(1.5)
    img = nib.load(warped_brain)
    data = np.asarray(img.dataobj, np.float32)
    if data.shape != shape:
        data = resample_to_grid(data, img.affine, shape, affine)
    tpl = np.asarray(nib.load(templates_15["t1w"]).dataobj)
    mask = np.asarray(nib.load(templates_15["brain_mask"]).dataobj) > 0
    return masked_corr(data, tpl, mask)


COLIN27 = Path("/usr/share/mricron/templates/ch2.nii.gz")
COLIN27_BRAIN = Path("/usr/share/mricron/templates/ch2bet.nii.gz")


def _input_scan(args: argparse.Namespace) -> tuple[Path, Path | None]:
    """The benchmark scan and its reference brain mask (None for the demo data)."""
    out = Path(args.out)
    if args.source == "colin27":
        import nibabel as nib
        import numpy as np

        if not (COLIN27.is_file() and COLIN27_BRAIN.is_file()):
            raise SystemExit(f"{COLIN27} not found: apt-get install mricron-data")
        mask = out / "colin27_ch2bet_mask.nii.gz"
        if not mask.is_file():
            bet = nib.load(COLIN27_BRAIN)
            data = (np.asarray(bet.dataobj) > 0).astype(np.uint8)
            nib.save(nib.Nifti1Image(data, bet.affine), mask)
        return COLIN27, mask
    if args.source == "demo":
        from brainlens.synthetic import DemoSpec, write_demo_dataset

        root = out / f"demo_{args.voxel}"
        if not (root / "participants.tsv").is_file():
            spec = DemoSpec(n_subjects=4, n_second_session=0, voxel_size=args.voxel)
            write_demo_dataset(root, spec, seed=args.seed)
        return sorted(root.rglob("*_T1w.nii.gz"))[0], None
    from brainlens.preprocess.phantom import make_phantom

    ph = make_phantom(out / "phantoms", seed=args.seed, voxel_size=args.voxel, name="sub-bench_T1w")
    return ph.t1w, ph.brain_mask


def one_scan(args: argparse.Namespace) -> dict:
    """Child mode: preprocess one phantom, print a JSON line."""
    import nibabel as nib
    import numpy as np

    from brainlens.grid import registration_grid
    from brainlens.preprocess import run_t1w_preproc
    from brainlens.preprocess.core import dice
    from brainlens.templates import build_templates

    out = Path(args.out)
    tpl_dir = out / f"templates_{args.one_res}"
    build_templates(tpl_dir, resolution=args.one_res)
    tpl15 = build_templates(out / "templates_1.5", resolution=1.5)
    reg_res = registration_grid(args.one_res)  # 4 mm: registered on the 2 mm grid
    reg_dir = None
    if reg_res is not None:
        reg_dir = out / f"templates_{reg_res}"
        build_templates(reg_dir, resolution=reg_res)
    t1w, true_mask = _input_scan(args)
    tag = f"{args.source}_{args.one_method}_{args.one_res}_seg-{args.one_seg}"
    t0 = time.perf_counter()
    qc = run_t1w_preproc(
        t1w,
        scan="sub-bench",
        out_dir=out / tag / "out",
        templates_dir=tpl_dir,
        resolution=args.one_res,
        skullstrip=args.one_method,
        seed=args.seed,
        threads=args.threads,
        work_dir=out / tag / "work",
        reg_templates_dir=reg_dir,
        segmentation_grid=args.one_seg,
    )
    wall = time.perf_counter() - t0
    mask = np.asarray(nib.load(qc["files"]["brain_mask"]).dataobj) > 0
    true = None
    if true_mask is not None:
        true = np.asarray(nib.as_closest_canonical(nib.load(true_mask)).dataobj) > 0
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "method": args.one_method + (" seg@analysis" if args.one_seg == "analysis" else ""),
        "res": args.one_res,
        "wall_s": round(wall, 1),
        "steps": qc["seconds_steps"],
        "peak_rss_mb": round(max(kids, me)),
        "corr_template": round(qc["corr_template"], 4),
        "corr_1p5": round(_corr_on_grid(qc["files"]["t1w"], tpl15), 4),
        "dice_true_mask": round(dice(mask, true), 4) if true is not None else float("nan"),
        "gm_mod_ratio": round(qc["gm_modulation_ratio"], 4),
        "jac_frac_nonpos": qc["jac_frac_nonpos"],
        "segmentation_voxel_mm": qc["segmentation_voxel_mm"],
        "native_ml": {t: round(qc[f"{t}_ml"], 1) for t in ("tiv", "gm", "wm", "csf")},
    }


def reference(args: argparse.Namespace) -> dict:
    """Child mode: antspyx SyN of the true-mask N4 brain to the 1 mm template."""
    import ants
    import nibabel as nib
    import numpy as np

    from brainlens.templates import build_templates

    out = Path(args.out)
    tpl1 = build_templates(out / "templates_1.0", resolution=1.0)
    tpl15 = build_templates(out / "templates_1.5", resolution=1.5)
    t1w, true_mask = _input_scan(args)
    head = ants.image_read(str(t1w))
    t0 = time.perf_counter()
    n4 = ants.n4_bias_field_correction(head)
    if args.source == "phantom":
        brain = n4 * ants.image_read(str(true_mask))
    else:  # a real or demo head: strip with deepbet as the pipeline does
        import nibabel as nib2
        from deepbet import BrainExtraction

        _, m, _ = BrainExtraction(no_gpu=True).run(nib2.load(t1w))
        mask_path = out / "reference_mask.nii.gz"
        nib2.save(m, mask_path)
        brain = n4 * ants.image_read(str(mask_path))
    fixed = ants.image_read(str(tpl1["t1w"]))
    reg = ants.registration(fixed, brain, type_of_transform="SyN", random_seed=args.seed)
    wall = time.perf_counter() - t0
    warped = out / "reference_warped.nii.gz"
    ants.image_write(reg["warpedmovout"], str(warped))
    m = np.asarray(nib.load(tpl1["brain_mask"]).dataobj) > 0
    w = np.asarray(nib.load(warped).dataobj)
    t = np.asarray(nib.load(tpl1["t1w"]).dataobj)
    return {
        "method": "antspyx SyN 1mm (ref)",
        "res": 1.0,
        "wall_s": round(wall, 1),
        "steps": {},
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "corr_template": round(float(np.corrcoef(w[m], t[m])[0, 1]), 4),
        "corr_1p5": round(_corr_on_grid(warped, tpl15), 4),
        "dice_true_mask": 1.0 if args.source == "phantom" else float("nan"),
        "gm_mod_ratio": float("nan"),
        "jac_frac_nonpos": float("nan"),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--res", type=float, nargs="+", default=[1.5, 2.0, 4.0])
    p.add_argument("--methods", nargs="+", default=["deepbet", "ants_template"])
    p.add_argument(
        "--segmentation-grid",
        nargs="+",
        choices=["native", "analysis"],
        default=["native"],
        help="grid(s) Atropos segments on (preprocess.segmentation_grid)",
    )
    p.add_argument(
        "--source",
        choices=["phantom", "demo", "colin27"],
        default="phantom",
        help="phantom: FSL head template warped (true mask known); demo: brainlens.synthetic; "
        "colin27: the real head of mricron-data",
    )
    p.add_argument("--voxel", type=float, default=1.5, help="native voxel size of the phantom")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--repeat", type=int, default=1, help="runs per row; the median is shown")
    p.add_argument("--no-reference", action="store_true")
    p.add_argument("--out", default="/tmp/bench_preproc")
    p.add_argument("--one-method", help=argparse.SUPPRESS)
    p.add_argument("--one-res", type=float, help=argparse.SUPPRESS)
    p.add_argument("--one-seg", default="native", help=argparse.SUPPRESS)
    p.add_argument("--reference", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(args.threads)
    if args.one_method:
        print("RESULT " + json.dumps(one_scan(args)))
        return
    if args.reference:
        print("RESULT " + json.dumps(reference(args)))
        return

    base = [
        sys.executable,
        __file__,
        "--source",
        args.source,
        "--voxel",
        str(args.voxel),
        "--threads",
        str(args.threads),
    ]
    base += ["--seed", str(args.seed), "--out", args.out]
    jobs = [
        base + ["--one-method", m, "--one-res", str(r), "--one-seg", g]
        for r in args.res
        for m in args.methods
        for g in args.segmentation_grid
    ]
    if not args.no_reference:
        jobs.append(base + ["--reference"])
    rows = []
    for cmd in jobs:
        runs = []
        for _ in range(max(1, args.repeat)):
            load = _load_avg()
            res = subprocess.run(cmd, capture_output=True, text=True)
            line = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")]
            if res.returncode or not line:
                print(f"FAILED: {' '.join(cmd[2:])}\n{res.stderr[-2000:]}", file=sys.stderr)
                break
            runs.append(json.loads(line[0][7:]) | {"load_before": load})
            print(json.dumps(runs[-1]), flush=True)
        if not runs:
            continue
        # the run with the median wall time represents the row (its steps, its r)
        row = sorted(runs, key=lambda r: r["wall_s"])[(len(runs) - 1) // 2]
        rows.append(row | {"wall_runs": [r["wall_s"] for r in runs]})
    Path(args.out, "results.json").write_text(json.dumps(rows, indent=2))

    steps = ["n4", "deepbet", "head_reg", "t1w2std", "atropos", "tissue_to_std", "jacobian"]
    hdr = f"{'method':26} {'res':>4} {'wall_s':>7} " + " ".join(f"{s[:8]:>8}" for s in steps)
    hdr += f" {'RSS_MB':>7} {'r_grid':>7} {'r_1p5':>6} {'dice':>6} {'GMmod':>6} {'GM_ml':>7}"
    hdr += f" {'load':>14}"
    hdr += "  wall of each run"
    print(
        f"\nsource {args.source}, native voxel "
        f"{'1 (Colin27)' if args.source == 'colin27' else args.voxel} mm, threads {args.threads}, "
        f"seed {args.seed}, nproc {os.cpu_count()}, runs per row {args.repeat} (median wall)"
    )
    print(hdr)
    for r in rows:
        st = " ".join(f"{r['steps'].get(s, float('nan')):8.1f}" for s in steps)
        print(
            f"{r['method']:26} {r['res']:4g} {r['wall_s']:7.1f} {st} {r['peak_rss_mb']:7d} "
            f"{r['corr_template']:7.4f} {r['corr_1p5']:6.3f} {r['dice_true_mask']:6.3f} "
            f"{r['gm_mod_ratio']:6.3f} {r.get('native_ml', {}).get('gm', float('nan')):7.1f} "
            f"{r['load_before']:>14}  " + " ".join(f"{w:.1f}" for w in r["wall_runs"])
        )


if __name__ == "__main__":
    main()
