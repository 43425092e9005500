"""Command line: ``python -m tcig_ops {tiny-models,stage1,demo} ...``.

Bad input exits with status 2 and a single ``error: ...`` line on stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

from .errors import TCIGInputError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        raise TCIGInputError(f"{self.prog}: {message}")


def _build() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m tcig_ops", description="TCIG stage 1 (VQGAN + CLIP + segmenters) on the command line")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("tiny-models", help="write tiny trained models in the real formats + manifest.json")
    t.add_argument("folder")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--vqgan-steps", type=int, default=500)
    t.add_argument("--seg-steps", type=int, default=200, help="CLIPSeg trains for 4x this many steps")
    t.add_argument("--guide-steps", type=int, default=300, help="steps of each 128 px SegFormer guide")
    t.add_argument("--force", action="store_true", help="rewrite even if manifest.json exists")

    s = sub.add_parser("stage1", help="optimise an image for a prompt and a layout")
    _stage1_args(s)
    s.add_argument("--vqgan", required=True, help="taming .ckpt/.safetensors (yaml beside it)")
    s.add_argument("--vqgan-config", help="taming .yaml (default: beside the checkpoint)")
    s.add_argument("--clip", help="open_clip weights (.safetensors/.bin/.pt), or a pretrained tag with --clip-arch")
    s.add_argument("--clip-arch", help="open_clip architecture name or config .json (default: <weights>.json)")
    s.add_argument(
        "--segmenter",
        action="append",
        required=True,
        metavar="PATH[:WEIGHT[:c1,c2]]",
        help="transformers folder; repeatable, each with its own weight and class subset",
    )
    s.add_argument("--layout", required=True, help="colour-coded layout PNG")
    s.add_argument("--classes", required=True, help='class map JSON file or text: {"#rrggbb": "label"}')
    s.add_argument("--out", required=True, help="output PNG")
    s.add_argument("--report", help="report JSON")
    s.add_argument("--side-by-side", help="PNG of layout | result | segmentation overlay")

    d = sub.add_parser("demo", help="the whole stage 1 demo on tiny models (or a models folder with manifest.json)")
    _stage1_args(d, size=96)
    d.add_argument("--models", default=None, help="folder with manifest.json (default: .cache/tiny-models, written if absent)")
    d.add_argument("--out-dir", default="demo_output")

    f = sub.add_parser("fetch-models", help="download known models (the paper's set by default) into DIR + manifest.json")
    f.add_argument(
        "names",
        nargs="*",
        help="known model names (default: the paper's VQGAN, ViT-B-32, SegFormer-b0, CLIPSeg); "
        "of two or more segmenters the last fetched is the judge, the others guide",
    )
    f.add_argument("--dir", required=True, help="models folder: DIR/vqgan, DIR/tcig_clip, DIR/segmenters, DIR/manifest.json")
    f.add_argument("--list", action="store_true", help="list the known models and whether DIR has them")

    b = sub.add_parser("batch", help="many stage-1 jobs (JOBS.jsonl or sampled layouts), here or on Ray; resumable")
    b.add_argument("jobs", nargs="?", help="JOBS.jsonl: one job per line (see README, 'Making a dataset')")
    b.add_argument("--out", required=True, help="output folder: OUT/<id>/..., OUT/summary.jsonl, OUT/summary.csv")
    b.add_argument("--models", help="folder with manifest.json (as for make demo MODELS=...)")
    b.add_argument("--vqgan")
    b.add_argument("--vqgan-config")
    b.add_argument("--clip")
    b.add_argument("--clip-arch")
    b.add_argument("--segmenter", action="append", default=[], metavar="PATH[:WEIGHT[:c1,c2]]")
    b.add_argument("--ray", default=None, metavar="local|ADDRESS", help="local: start a Ray pool here; ADDRESS: join a cluster")
    b.add_argument("--workers", type=int, default=2, help="Ray actors (each loads the models once)")
    b.add_argument("--threads", type=int, default=None, help="torch threads per worker (default: cores / workers)")
    b.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPU share of each Ray actor (e.g. 1 or 0.5)")
    b.add_argument("--device", default="cpu")
    b.add_argument("--judge", default=None, metavar="PATH", help="a segmenter that does not guide: the summary adds judge_miou")
    b.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"], help="as for stage1; a job may override it")
    b.add_argument("--sample-layouts", type=int, default=None, metavar="N", help="draw N random layouts instead of a JOBS file")
    b.add_argument("--labels", default="sky,tree,grass,water,road,building,sand,mountain", help="labels the sampler draws from")
    b.add_argument("--seed", type=int, default=0, help="seed of the layout sampler (job seeds follow from it)")
    b.add_argument("--size", type=int, nargs=2, default=[128, 128], metavar=("W", "H"), help="size of sampled jobs")
    b.add_argument("--iterations", type=int, default=300, help="iterations of sampled jobs")
    b.add_argument("--prompt", default="a photo", help="prompt of sampled jobs (their labels are appended)")
    b.add_argument(
        "--retry-failed", action="store_true", help="run again the jobs recorded as failed (by default a rerun runs only missing jobs)"
    )
    return p


def _stage1_args(s, iterations: int = 300, size: int = 128) -> None:
    s.add_argument("--prompt", default="a mountain lake under a clear sky", help="'text:weight[:stop] | ...'")
    s.add_argument("--size", type=int, nargs=2, default=[size, size], metavar=("W", "H"))
    s.add_argument("--iterations", type=int, default=iterations)
    s.add_argument("--lr", type=float, default=0.2)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--cutn", type=int, default=16)
    s.add_argument("--cut-pow", type=float, default=1.0)
    s.add_argument("--clip-weight", type=float, default=0.1, help="the CLIP term's pull relative to a segmenter guide of weight 1")
    s.add_argument("--target-miou", type=float, default=None, help="stop early at this mIoU")
    s.add_argument(
        "--region-prompt",
        action="append",
        default=[],
        metavar="'LABEL: PROMPT'",
        help="a CLIP prompt for one layout region (repeatable), e.g. 'water: a calm lake'",
    )
    s.add_argument(
        "--levels",
        type=float,
        nargs="+",
        default=None,
        metavar="SCALE",
        help="coarse-to-fine scales of the latent grid ending at 1, e.g. 0.5 1 (1 alone: full size only)",
    )
    s.add_argument("--level-steps", type=float, nargs="+", default=None, metavar="SHARE", help="share of the iterations per level")
    s.add_argument("--level-lr", type=float, nargs="+", default=None, metavar="FACTOR", help="learning-rate factor per level")
    s.add_argument(
        "--level-min-side",
        type=int,
        default=None,
        metavar="PX",
        help="leave out a coarse level smaller than this on its short side, its steps going to the next (default 64; 0: every level runs)",
    )
    s.add_argument(
        "--level-hand-over",
        choices=("latent", "image"),
        default=None,
        help="how a coarse level's result reaches the next size: its latent cells repeated, or its image enlarged and "
        "VQGAN-encoded (default: image; with --init-image always latent)",
    )
    s.add_argument("--plateau-steps", type=int, default=None, metavar="N", help="stop when mIoU has not improved for N steps (0: never)")
    s.add_argument("--init-image", help="start from this image instead of random codes")
    s.add_argument(
        "--layout-start-steps",
        type=int,
        default=None,
        metavar="N",
        help="steps of the colour field the run starts from when there is no init image (0: random codes)",
    )
    s.add_argument("--device", default="cpu")
    s.add_argument(
        "--judge",
        default=None,
        metavar="PATH",
        help="a segmenter folder that does not guide: the report adds its reading (judge_miou, judge_iou, oracle_miou)",
    )
    s.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16", "fp16"],
        help="autocast precision of the forward pass; auto: what the device runs fastest (the report says which ran)",
    )


def _settings(a):
    from .stage1 import Stage1Settings

    if a.target_miou is not None and not (0 < a.target_miou <= 1):
        raise TCIGInputError(f"--target-miou: {a.target_miou}; use a value in (0, 1]")
    if not all(math.isfinite(v) for v in (a.lr, a.clip_weight, a.cut_pow)):
        raise TCIGInputError("--lr, --clip-weight and --cut-pow must be finite numbers")
    extra = {}
    if a.levels is not None:
        extra.update(
            levels=tuple(a.levels),
            level_steps=tuple(a.level_steps) if a.level_steps else None,
            level_lr=tuple(a.level_lr) if a.level_lr else None,
        )
    elif a.level_steps is not None or a.level_lr is not None:
        raise TCIGInputError("--level-steps and --level-lr need --levels")
    if a.level_min_side is not None:
        extra["level_min_side"] = a.level_min_side
    if a.level_hand_over is not None:
        extra["level_hand_over"] = a.level_hand_over
    if a.plateau_steps is not None:
        extra["plateau_steps"] = a.plateau_steps or None
    if a.layout_start_steps is not None:
        extra["layout_start_steps"] = a.layout_start_steps
    extra["precision"] = a.precision
    return Stage1Settings(
        width=a.size[0],
        height=a.size[1],
        iterations=a.iterations,
        lr=a.lr,
        seed=a.seed,
        clip_weight=a.clip_weight,
        target_miou=a.target_miou,
        **extra,
    )


class _Progress:
    """tqdm bar opened at the first step, so input errors found before step 1 print alone. It shows the
    weighted loss without the term normalisation (the normalised loss Adam minimises is rescaled every
    25 steps and can rise over a good run), the guides' mIoU and, with a judge, the judge's mIoU of the
    current image (read every ``judge_every`` steps: a decode and one judge forward each)."""

    def __init__(self, total: int, judge=None, layout=None, judge_every: int = 25):
        self.total, self.bar = total, None
        self.judge, self.layout, self.judge_every, self.judge_miou = judge, layout, judge_every, None

    def __call__(self, info) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, desc="stage 1", unit="it", file=sys.stderr, leave=False)
        # absolute position: the layout start's steps all report step 0 and must not advance the bar
        self.bar.update(info.step - self.bar.n)
        self.bar.set_description("stage 1 (layout start)" if info.phase == "start" else "stage 1", refresh=False)
        if self.judge is not None and info.phase != "start" and info.preview_due(self.judge_every):
            import torch

            from .judge import judge_ious
            from .metrics import mean_iou

            with torch.no_grad():
                self.judge_miou = mean_iou(judge_ious(self.judge, info.image(), self.layout))
        if info.miou is not None:
            shown = {"loss": f"{info.objective:.4g}", "guide": f"{info.miou:.3f}"}
            if self.judge_miou is not None:
                shown["judge"] = f"{self.judge_miou:.3f}"
            self.bar.set_postfix(shown)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _stage1(
    a, vqgan, clip, segmenter_specs, layout_path, class_map, out, report, side, clip_arch=None, vqgan_config=None, judge_default=None
):
    from . import runner
    from .imageio import load_image
    from .prompts import parse_prompts, parse_region_prompts
    from .segmenters import load_segmenter
    from .stage1 import Stage1Settings

    # check everything cheap before loading any model
    settings = _settings(a)
    Stage1Settings(**vars(settings)).validate(1)
    if a.cutn < 1:
        raise TCIGInputError(f"--cutn: {a.cutn} cutouts; use at least 1 (32 is the usual value)")
    if clip and settings.clip_weight > 0:
        parse_prompts(a.prompt)
    regions = {}
    for line in a.region_prompt:
        for label, text in parse_region_prompts(line).items():
            if label in regions:
                raise TCIGInputError(f"--region-prompt: label {label!r} is given twice")
            parse_prompts(text)
            regions[label] = text
    specs = [runner.parse_segmenter_spec(s) for s in segmenter_specs]
    layout = runner.load_layout(layout_path, class_map)
    if regions and not clip:
        raise TCIGInputError("--region-prompt needs the guidance CLIP (--clip); give one or leave the region prompts out")
    unknown = [label for label in regions if label not in layout.labels]
    if unknown:
        raise TCIGInputError(f"--region-prompt: labels {unknown} are not in the layout; its labels are {layout.labels}")
    init = load_image(a.init_image, "init image")[None] if a.init_image else None
    _quiet_transformers()
    models = runner.load_models(vqgan, clip, [s.path for s in specs], a.device, vqgan_config, clip_arch)
    judge_path = getattr(a, "judge", None) or judge_default
    if judge_path and any(os.path.realpath(judge_path) == os.path.realpath(s.path) for s in specs):
        raise TCIGInputError(f"--judge {judge_path} is also a guide: a judge must be a segmenter that did not steer")
    judge = load_segmenter(judge_path, device=a.device) if judge_path else None
    if models.clip is None and settings.clip_weight > 0:
        settings.clip_weight = 0.0
        print("note: no --clip given; running with the segmentation loss only", file=sys.stderr)
    progress = _Progress(settings.iterations, judge, layout)
    try:
        result = runner.run(models, specs, layout, a.prompt, settings, a.cutn, a.cut_pow, init, progress, regions)
    finally:
        progress.close()
    data = runner.write_outputs(result, layout, models, out, report, side, vars(a) | {"size": list(a.size)}, a.device, judge)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    judged = ""
    if judge is not None:
        judged = f" | judge {data['judge_miou']:.3f}"
        if data.get("oracle_miou") is not None:
            judged += f" (oracle {data['oracle_miou']:.3f}, {100 * data['judge_share']:.0f}% of it)"
    print(f"mIoU {data['miou']:.3f} by the guide{judged} after {result.steps} steps ({data['seconds_per_iteration']:.3f} s/it) -> {out}")
    return 0


def _fetch(a) -> int:
    from . import fetch

    if a.list:
        for name, spec in fetch.KNOWN_MODELS.items():
            print(f"{name:<38} {spec['kind']:<11} {'present' if fetch.is_present(name, a.dir) else 'not downloaded'}")
        return 0
    names = a.names or fetch.DEFAULT_SET
    for n in names:
        fetch._check(n)
    from tqdm import tqdm

    bars: dict = {}

    def progress(done, total):
        bar = bars.get("bar")
        if bar is None or bar.total != total:
            if bar is not None:
                bar.close()
            bar = bars["bar"] = tqdm(total=total, unit="B", unit_scale=True, file=sys.stderr, leave=False)
        bar.update(done - bar.n)

    try:
        m = fetch.fetch_models(names, a.dir, progress)
    finally:
        if bars.get("bar") is not None:
            bars["bar"].close()
    print(f"wrote {os.path.join(a.dir, 'manifest.json')}: {json.dumps(m)}")
    return 0


def _batch(a) -> int:
    from . import batch, precision, runner

    if (a.jobs is None) == (a.sample_layouts is None):
        raise TCIGInputError("batch: give a JOBS.jsonl file or --sample-layouts N (one of the two)")
    if a.workers < 1:
        raise TCIGInputError(f"--workers: {a.workers}; use at least 1")
    if a.ray is not None:
        batch.ray_or_explain()
    if a.models:
        models = runner.manifest_models(a.models)
    elif a.vqgan and a.segmenter:
        models = {"vqgan": a.vqgan, "clip": a.clip, "clip_arch": a.clip_arch, "vqgan_config": a.vqgan_config, "segmenters": a.segmenter}
    else:
        raise TCIGInputError("batch: give --models DIR (with manifest.json) or --vqgan and --segmenter")
    if a.judge:
        models["judge"] = a.judge
    jobs_path = a.jobs or batch.sample_jobs(a.sample_layouts, a.labels.split(","), a.seed, a.out, tuple(a.size), a.iterations, a.prompt)
    jobs = batch.read_jobs(jobs_path)
    _quiet_transformers()
    # "auto" is resolved once, here, and every worker runs what it says (on x86 the CPU's flags decide,
    # the same anywhere; elsewhere a timed probe could decide differently per process)
    models["precision"] = precision.choose(a.precision, a.device)[0]
    counts = batch.run_batch(jobs, models, a.out, a.ray, a.workers, a.threads, a.gpus_per_worker, a.device, retry_failed=a.retry_failed)
    print(f"{counts['ok']} ok, {counts['failed']} failed, {counts['skipped']} already done (of {counts['jobs']}) -> {a.out}/summary.jsonl")
    return 0


def _quiet_transformers() -> None:
    """The CLI owns its process: keep transformers' per-file progress bars off stderr."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def main(argv: list[str] | None = None) -> int:
    try:
        a = _build().parse_args(argv)
        if a.command == "tiny-models":
            from .tiny import write_tiny_models

            if os.path.isfile(os.path.join(a.folder, "manifest.json")) and not a.force:
                print(f"{a.folder}/manifest.json exists; nothing to do (use --force to rewrite)")
                return 0
            write_tiny_models(a.folder, a.seed, a.vqgan_steps, a.seg_steps, guide_steps=a.guide_steps)
            print(f"wrote {a.folder}/manifest.json")
            return 0
        if a.command == "stage1":
            return _stage1(
                a, a.vqgan, a.clip, a.segmenter, a.layout, a.classes, a.out, a.report, a.side_by_side, a.clip_arch, a.vqgan_config
            )
        if a.command == "batch":
            return _batch(a)
        if a.command == "fetch-models":
            return _fetch(a)
        if a.command == "demo":
            from .demo import prepare_demo

            paths = prepare_demo(a.models, a.out_dir, tuple(a.size))
            return _stage1(
                a,
                paths["vqgan"],
                paths["clip"],
                paths["segmenters"],
                paths["layout"],
                paths["classes"],
                os.path.join(a.out_dir, "stage1.png"),
                os.path.join(a.out_dir, "report.json"),
                os.path.join(a.out_dir, "side_by_side.png"),
                paths.get("clip_arch"),
                paths.get("vqgan_config"),
                paths.get("judge"),  # the manifest's judge, unless --judge names another
            )
    except TCIGInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 1
