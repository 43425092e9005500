"""Stage-1 variants read by the judge on the tuning layouts, to choose defaults without fooling anyone.

    .venv/bin/python bench/tune_stage1.py [--variants defaults "two guides"] [--seeds 100 101 102] [--sizes 64 128]

The layouts come from the sampler seeds 100-102 at 64 and 128 px; the bench's judged part uses seeds
from 1000 on, so what is chosen here is measured there on layouts it never saw. For each variant and
layout it prints what guide A (the tiny SegFormer every default run is steered by) reads at the stop,
what the judge (a segmenter of another family that never guides) reads, the judge's share of its
oracle (its reading of the world's own rendering of the layout), the smallest region's share of its
oracle IoU, and the seconds. A variant that raises the guide but not the judge fools the guide.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # a script beside the package, not the pack itself


def variants(seg_a, seg_b):
    """name -> (guides, Stage1Settings overrides)."""
    from tcig_ops.stage1 import Guide

    return {
        "defaults": ([Guide(seg_a)], {}),
        "two guides": ([Guide(seg_a), Guide(seg_b)], {}),
        "two guides, half each": ([Guide(seg_a, 0.5), Guide(seg_b, 0.5)], {}),
        "jitter 0.03": ([Guide(seg_a)], {"seg_jitter": 0.03}),
        "region start": ([Guide(seg_a)], {"layout_start": "regions"}),
        "region start, plateau 40": ([Guide(seg_a)], {"layout_start": "regions", "plateau_steps": 40}),
        "region start, margin 0.2": ([Guide(seg_a)], {"layout_start": "regions", "seg_margin": 0.2}),
        "margin 0.2": ([Guide(seg_a)], {"seg_margin": 0.2}),
    }


def main() -> None:
    import torch

    sys.path.insert(0, os.path.join(ROOT, "bench"))
    from stage1_bench import _mean, _tiny

    from tcig_ops.clip_guide import ClipGuide
    from tcig_ops.judge import judge_report, oracle_image
    from tcig_ops.layout import layout_from_index_map
    from tcig_ops.prompts import parse_prompts
    from tcig_ops.sampler import sample_layout
    from tcig_ops.segmenters import load_segmenter
    from tcig_ops.stage1 import Stage1Settings, run_stage1
    from tcig_ops.world import CLASSES

    vq, seg_a, clip, m = _tiny()
    seg_b, judge = load_segmenter(m["segmenters"][1]), load_segmenter(m["judge"])
    table = variants(seg_a, seg_b)
    p = argparse.ArgumentParser()
    p.add_argument("--variants", nargs="+", default=list(table), choices=list(table))
    p.add_argument("--seeds", type=int, nargs="+", default=[100, 101, 102])
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    a = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; guide A = {seg_a.name}, judge = {judge.name}", flush=True)
    totals: dict[str, list[dict]] = {v: [] for v in a.variants}
    for size in a.sizes:
        for seed in a.seeds:
            idx, labels, kind = sample_layout(seed, (size, size), list(CLASSES))
            layout = layout_from_index_map(idx, labels)
            oracle = judge_report(judge, oracle_image(layout), layout)
            print(f"{size}px seed {seed} {kind} ({len(labels)} labels), oracle {oracle['judge_miou']:.3f}", flush=True)
            for name in a.variants:
                guides, overrides = table[name]
                s = Stage1Settings(width=size, height=size, **overrides)
                t = time.perf_counter()
                r = run_stage1(vq, layout, guides, s, clip_guide=ClipGuide(clip, parse_prompts("a landscape"), cutn=8))
                sec = time.perf_counter() - t
                g = judge_report(seg_a, r.image, layout)  # guide A's reading, whatever steered
                j = judge_report(judge, r.image, layout)
                row = {
                    "guide": g["judge_miou"],
                    "judge": j["judge_miou"],
                    "share": j["judge_miou"] / oracle["judge_miou"],
                    "smallest": min(j["judge_iou"][k] / max(oracle["judge_iou"][k], 1e-6) for k in j["judge_iou"]),
                    "seconds": sec,
                }
                totals[name].append(row)
                print(
                    f"  {name:<24} guide A {row['guide']:.3f} | judge {row['judge']:.3f} ({100 * row['share']:.0f}% of oracle), "
                    f"smallest region {100 * row['smallest']:.0f}% of its oracle | gap {row['guide'] - row['judge']:+.3f} | {sec:.1f} s",
                    flush=True,
                )
    print("\nmeans over the tuning layouts:")
    for name, rows in totals.items():
        mean = lambda k: _mean([r[k] for r in rows])  # noqa: E731,B023
        print(
            f"  {name:<24} guide A {mean('guide'):.3f} | judge share {mean('share'):.3f} (worst {min(r['share'] for r in rows):.3f}) "
            f"| smallest region share worst {min(r['smallest'] for r in rows):.3f} | gap {mean('guide') - mean('judge'):+.3f} "
            f"| {mean('seconds'):.1f} s"
        )


if __name__ == "__main__":
    main()
