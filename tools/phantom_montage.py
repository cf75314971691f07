"""Draw one phantom case as a PNG montage and time the phantom generator.

Rows: an axial and a coronal slice through the tumour centre; columns: T1, T1ce, T2, FLAIR and
the label (necrotic red, edema green, enhancing yellow) over the T1ce slice.

Usage:
    python tools/phantom_montage.py docs/images/phantom_brats.png            # 155 x 240 x 240
    python tools/phantom_montage.py demo.png --shape 48 64 64 --index 3
    python tools/phantom_montage.py out.png --kind brats-simple --time 3      # + seconds per case
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

#: RGBA of each BraTS label in the overlay.
_COLOURS = {1: (0.9, 0.1, 0.1, 0.75), 2: (0.1, 0.85, 0.2, 0.45), 4: (1.0, 0.9, 0.0, 0.8)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="PNG to write")
    parser.add_argument("--shape", type=int, nargs=3, default=(155, 240, 240), metavar="N")
    parser.add_argument("--kind", default="brats", help="phantom kind (default: brats)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--index", type=int, default=0, help="case index (default: 0)")
    parser.add_argument(
        "--time", type=int, default=0, metavar="N", help="also time N more cases (JSON)"
    )
    args = parser.parse_args()

    from partseg.phantom import make_case

    start, cpu = time.perf_counter(), time.process_time()
    case = make_case(args.index, tuple(args.shape), args.seed, args.kind)
    first = time.perf_counter() - start, time.process_time() - cpu
    draw(case, args.out)
    if args.time:
        start, cpu = time.perf_counter(), time.process_time()
        for i in range(args.time):
            make_case(args.index + 1 + i, tuple(args.shape), args.seed, args.kind)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        report = {
            "kind": args.kind,
            "shape": list(args.shape),
            "first_case_s": round(first[0], 2),  # includes loading the template once
            "first_case_cpu_s": round(first[1], 2),
            "seconds_per_case": round(wall / args.time, 2),
            "cpu_seconds_per_case": round(cpu / args.time, 2),
            "cases_timed": args.time,
            "load_average": [round(v, 2) for v in os.getloadavg()],
        }
        print(json.dumps(report))


def draw(case, out: Path) -> None:
    """Save the montage of ``case`` (a :class:`partseg.phantom.PhantomCase`) to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tumour = np.argwhere(case.label > 0)
    z, y, _ = (tumour.mean(axis=0).round().astype(int) if len(tumour) else
               np.array(case.label.shape) // 2)  # fmt: skip
    views = {"axial": lambda v: v[z][::-1], "coronal": lambda v: v[:, y][::-1]}
    names = [*case.channels, "label"]
    fig, axes = plt.subplots(len(views), len(names), figsize=(2.6 * len(names), 2.7 * len(views)))
    axes = np.atleast_2d(axes)
    spacing = float(case.affine[0, 0])
    for row, (view, cut) in enumerate(views.items()):
        for col, name in enumerate(names):
            ax = axes[row, col]
            channel = case.channels.index("t1ce") if name == "label" else col
            grey = cut(case.image[channel])
            ax.imshow(grey, cmap="gray", vmin=0, vmax=np.percentile(grey[grey > 0], 99.5))
            if name == "label":
                overlay = np.zeros((*grey.shape, 4))
                for value, colour in _COLOURS.items():
                    overlay[cut(case.label) == value] = colour
                ax.imshow(overlay)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name)
            if col == 0:
                ax.set_ylabel(view)
    shape = "x".join(str(n) for n in case.label.shape)
    fig.suptitle(f"{case.case_id}: {shape} voxels (Z, Y, X) of {spacing:g} mm", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    main()
