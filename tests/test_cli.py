"""The CLI writes image + report and rejects bad input with exit 2 and one 'error:' line."""

import json
import os
import subprocess
import sys

import pytest

from tcig_ops.demo import demo_layout
from tcig_ops.imageio import load_image, save_image
from tcig_ops.world import LAYOUT_HEX

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "tcig_ops", *args], cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.fixture()
def layout_files(tmp_path):
    lay = save_image(demo_layout(64, 64), str(tmp_path / "layout.png"))
    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps({LAYOUT_HEX[k]: k for k in ("sky", "mountain", "water")}))
    return lay, str(classes)


def test_cli_stage1_writes_image_and_report(tiny, layout_files, tmp_path):
    lay, classes = layout_files
    out, report, side = tmp_path / "o.png", tmp_path / "r.json", tmp_path / "s.png"
    r = cli(
        "stage1",
        "--vqgan",
        tiny["vqgan"],
        "--clip",
        tiny["clip"],
        "--segmenter",
        tiny["segmenters"][0] + ":1.0",
        "--layout",
        lay,
        "--classes",
        classes,
        "--prompt",
        "a lake:1 | fog:-0.2",
        "--size",
        "64",
        "64",
        "--iterations",
        "300",
        "--seed",
        "1",
        "--cutn",
        "8",
        "--out",
        str(out),
        "--report",
        str(report),
        "--side-by-side",
        str(side),
    )
    assert r.returncode == 0, r.stderr
    data = json.loads(report.read_text())
    for key in ("miou", "iou", "seconds_per_iteration", "peak_memory_mb", "history"):
        assert key in data
    assert set(data["iou"]) == {"sky", "mountain", "water"}
    assert data["miou"] >= 0.85 and len(data["history"]) == 300 and data["peak_memory_mb"] > 0
    assert load_image(str(out)).shape == (3, 64, 64)
    assert load_image(str(side)).shape[2] == 3 * 64 + 2 * 4


def test_cli_two_segmenters_with_subsets(tiny, layout_files, tmp_path):
    lay, classes = layout_files
    r = cli(
        "stage1",
        "--vqgan",
        tiny["vqgan"],
        "--segmenter",
        tiny["segmenters"][0] + ":1:sky,water",
        "--segmenter",
        tiny["segmenters"][1] + ":2:mountain",
        "--layout",
        lay,
        "--classes",
        classes,
        "--size",
        "64",
        "64",
        "--iterations",
        "60",
        "--layout-start-steps",
        "0",  # from random codes, so that each guide's classes have room to rise
        "--out",
        str(tmp_path / "o.png"),
        "--report",
        str(tmp_path / "r.json"),
    )
    assert r.returncode == 0, r.stderr
    data = json.loads((tmp_path / "r.json").read_text())
    hist = data["history"]
    assert "seg0" in hist[0] and "seg1" in hist[0] and "clip" not in hist[0]
    # each guide moves its own classes (each judged by the segmenter that guides it)
    assert set(data["iou"]) == set(data["start_iou"]) == {"sky", "water", "mountain"}
    for label in ("sky", "water", "mountain"):
        assert data["iou"][label] > data["start_iou"][label] + 0.2, (label, data["start_iou"], data["iou"])


def _bad(r, *words):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    for w in words:
        assert w in lines[0], lines[0]


@pytest.mark.parametrize(
    "override, words",
    [
        ({"--vqgan": "/nope/missing.ckpt"}, ["VQGAN checkpoint", "missing.ckpt"]),
        ({"--iterations": "0"}, ["iterations"]),
        ({"--lr": "-1"}, ["lr"]),
        ({"--cutn": "0"}, ["cutn"]),
        ({"--prompt": "   "}, ["prompt"]),
        ({"--classes": '{"#87ceeb": "skyy", "#735f54": "mountain", "#1e4ca6": "water"}'}, ["skyy", "sky"]),
        ({"--classes": '{"#zzz": "sky"}'}, ["#zzz"]),
        ({"--layout": "/nope/layout.png"}, ["layout", "layout.png"]),
        ({"--size": ["abc", "64"]}, ["size"]),
    ],
)
def test_cli_rejects_bad_input(tiny, layout_files, tmp_path, override, words):
    lay, classes = layout_files
    args = {
        "--vqgan": tiny["vqgan"],
        "--clip": tiny["clip"],
        "--segmenter": tiny["segmenters"][0],
        "--layout": lay,
        "--classes": classes,
        "--size": ["32", "32"],
        "--iterations": "2",
        "--out": str(tmp_path / "o.png"),
        "--prompt": "a lake",
    }
    args.update(override)
    flat = []
    for k, v in args.items():
        flat += [k] + (v if isinstance(v, list) else [v])
    _bad(cli("stage1", *flat), *words)
    assert not (tmp_path / "o.png").exists()


def test_cli_unknown_command_is_one_line():
    _bad(cli("nonsense"))


def test_cli_region_prompts_levels_and_plateau(tiny, layout_files, tmp_path):
    lay, classes = layout_files
    base = [
        "stage1",
        "--vqgan",
        tiny["vqgan"],
        "--clip",
        tiny["clip"],
        "--segmenter",
        tiny["segmenters"][0],
        "--layout",
        lay,
        "--classes",
        classes,
        "--size",
        "64",
        "48",
        "--iterations",
        "6",
        "--out",
        str(tmp_path / "o.png"),
        "--prompt",
        "a lake",
    ]
    r = cli(
        *base,
        "--region-prompt",
        "water: a calm lake",
        "--levels",
        "0.5",
        "1",
        "--level-steps",
        "1",
        "1",
        "--level-lr",
        "2",
        "1",
        "--level-min-side",
        "0",  # 64x48: its 32x24 level would otherwise be left out
        "--level-hand-over",
        "image",
        "--plateau-steps",
        "0",
        "--layout-start-steps",
        "5",
        "--report",
        str(tmp_path / "r.json"),
    )
    assert r.returncode == 0, r.stderr
    data = json.loads((tmp_path / "r.json").read_text())
    assert [h["level"] for h in data["history"]] == [0, 0, 0, 1, 1, 1]
    assert all("region:water" in h for h in data["history"])
    assert "started from the layout (5 colour-field steps)" in data["notes"]
    _bad(cli(*base, "--region-prompt", "lake: water"), "lake", "not in the layout", "sky")
    _bad(cli(*base, "--region-prompt", "no colon"), "label: prompt")
    _bad(cli(*base, "--levels", "1", "0.5"), "levels")
    _bad(cli(*base, "--layout-start-steps", "-1"), "layout_start_steps")
    _bad(cli(*base, "--level-lr", "2", "1"), "need --levels")
    _bad(cli(*base, "--levels", "0.5", "1", "--level-lr", "2"), "level_lr")
    _bad(cli(*base, "--level-hand-over", "pixels"), "--level-hand-over", "latent", "image")


def test_progress_bar_counts_steps_not_callbacks():
    """The layout start calls back 60 times at step 0; the bar must end at the step count, not beyond."""
    import io

    from tcig_ops.cli import _Progress
    from tcig_ops.stage1 import StepInfo

    p = _Progress(5)
    for _ in range(60):
        p(StepInfo(0, 5, float("nan"), None, lambda: None, phase="start"))
    assert p.bar.n == 0 and "layout start" in p.bar.desc
    p.bar.fp = io.StringIO()
    for k in range(1, 6):
        p(StepInfo(k, 5, 1.0, 0.5, lambda: None))
    assert p.bar.n == 5 and p.bar.desc.startswith("stage 1") and "layout" not in p.bar.desc
    p.close()


def test_progress_bar_shows_the_raw_objective_the_guide_and_the_judge(tiny):
    """The bar's loss is the un-normalised objective; with a judge it adds the judge's mIoU of the
    current image, read on preview steps only."""
    import io

    from conftest import region_layout
    from tcig_ops.cli import _Progress
    from tcig_ops.judge import oracle_image
    from tcig_ops.segmenters import load_segmenter
    from tcig_ops.stage1 import StepInfo

    layout = region_layout("lake", 64)
    oracle = oracle_image(layout)
    decodes = []

    def image():
        decodes.append(1)
        return oracle

    p = _Progress(50, load_segmenter(tiny["judge"]), layout, judge_every=25)
    p(StepInfo(1, 50, 123.0, 0.5, image, objective=0.25))
    p.bar.fp = io.StringIO()
    assert not decodes and "judge" not in p.bar.postfix and "loss=0.25" in p.bar.postfix and "guide=0.500" in p.bar.postfix
    p(StepInfo(25, 50, 123.0, 0.6, image, objective=0.2))
    assert len(decodes) == 1 and "judge=" in p.bar.postfix
    judged = float(p.bar.postfix.split("judge=")[1].split(",")[0])
    assert judged > 0.8  # the world's own rendering of the layout, read by the judge
    p.close()
