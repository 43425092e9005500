"""The judge: a segmenter of another family that never guides reports control, with the oracle (its
reading of the world's own rendering of a layout) as the best any image can score."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, region_layout
from tcig_ops.judge import judge_report, oracle_image
from tcig_ops.stage1 import Guide, Stage1Settings, run_stage1


@pytest.fixture(scope="module")
def judge(tiny):
    from tcig_ops.segmenters import load_segmenter

    assert tiny.get("judge") and tiny["judge"] not in tiny["segmenters"]
    return load_segmenter(tiny["judge"])


def test_the_judge_is_another_family_trained_apart_and_reads_the_world(tiny, judge):
    with open(os.path.join(tiny["judge"], "config.json"), encoding="utf-8") as f:
        assert json.load(f)["model_type"] == "upernet"
    assert tiny["judge_accuracy"] >= 0.8, tiny["judge_accuracy"]  # held-out renders, clean and through the VQGAN
    for kind in ("lake", "road", "beach"):
        layout = region_layout(kind, 64)
        oracle = oracle_image(layout)
        assert oracle is not None and oracle.shape == (1, 3, 64, 64)
        assert judge_report(judge, oracle, layout)["judge_miou"] >= 0.8


def test_oracle_only_for_world_labels():
    from tcig_ops.layout import layout_from_index_map

    idx = torch.zeros(8, 8, dtype=torch.long)
    idx[:, 4:] = 1
    assert oracle_image(layout_from_index_map(idx, ["sky", "water"])) is not None
    assert oracle_image(layout_from_index_map(idx, ["sky", "volcano"])) is None


def test_stage1_control_holds_before_the_judge(models, judge):
    """The guide steers; the judge, which took no part, sees the layout too (against the same run with the guide at 0)."""
    layout = region_layout("lake", 64)
    s = Stage1Settings(width=64, height=64, iterations=150)
    guided = run_stage1(models["vqgan"], layout, [Guide(models["seg_a"])], s)
    unguided = run_stage1(models["vqgan"], layout, [Guide(models["seg_a"], 0.0)], s)
    g, u = (judge_report(judge, r.image, layout) for r in (guided, unguided))
    # the raw weighted loss falls over the run (the normalised one Adam sees is rescaled every 25 steps)
    objective = [h["objective"] for h in guided.history]
    assert sum(objective[-10:]) < 0.8 * sum(objective[:10]), (objective[:10], objective[-10:])
    assert g["judge_miou"] > u["judge_miou"] + 0.2, (g["judge_iou"], u["judge_iou"])
    assert g["oracle_miou"] >= g["judge_miou"] - 0.05 and g["judge_share"] > 0


def test_cli_reports_the_judge_and_refuses_a_guide_as_judge(tiny, tmp_path):
    from tcig_ops.demo import demo_layout
    from tcig_ops.imageio import save_image
    from tcig_ops.world import LAYOUT_HEX

    save_image(demo_layout(48, 48), str(tmp_path / "lake.png"))
    classes = json.dumps({LAYOUT_HEX[k]: k for k in ("sky", "mountain", "water")})
    base = ["--vqgan", tiny["vqgan"], "--segmenter", tiny["segmenters"][0], "--layout", str(tmp_path / "lake.png"), "--classes", classes]
    base += ["--size", "48", "48", "--iterations", "20", "--out", str(tmp_path / "o.png"), "--report", str(tmp_path / "r.json")]

    def cli(*extra):
        return subprocess.run([sys.executable, "-m", "tcig_ops", "stage1", *base, *extra], cwd=ROOT, capture_output=True, text=True)

    out = cli("--judge", tiny["judge"])
    assert out.returncode == 0, out.stderr[-1500:]
    rep = json.loads((tmp_path / "r.json").read_text())
    assert set(rep["judge_iou"]) == {"sky", "mountain", "water"} and 0 <= rep["judge_miou"] <= 1 and rep["oracle_miou"] > 0
    assert "judge" in out.stdout and "oracle" in out.stdout and "by the guide" in out.stdout
    bad = cli("--judge", tiny["segmenters"][0])
    assert bad.returncode == 2 and "a judge must be a segmenter that did not steer" in bad.stderr


def test_seg_jitter_is_seeded_and_checked(models):
    """The guides' random shift: the same seed gives the same image, it changes the run, bad values are refused."""
    from tcig_ops.errors import TCIGInputError

    layout = region_layout("road", 32)
    kw = dict(width=32, height=32, iterations=6, levels=None, layout_start_steps=0, seed=2)
    runs = [run_stage1(models["vqgan"], layout, [Guide(models["seg_a"])], Stage1Settings(seg_jitter=j, **kw)) for j in (0.1, 0.1, 0.0)]
    assert torch.equal(runs[0].image, runs[1].image) and not torch.equal(runs[0].image, runs[2].image)
    with pytest.raises(TCIGInputError, match="seg_jitter"):
        Stage1Settings(seg_jitter=0.5).validate(1)


def test_manifest_guides_say_how_many_segmenters_steer(tiny, tmp_path):
    """The tiny manifest steers with its first two segmenters; a manifest without ``guides`` with its first
    one (as before); a count it cannot honour is refused, naming the key and the range."""
    from tcig_ops.errors import TCIGInputError
    from tcig_ops.runner import manifest_models

    assert tiny["guides"] == 2
    assert manifest_models(os.path.dirname(os.path.dirname(tiny["segmenters"][0])))["segmenters"] == tiny["segmenters"][:2]
    for guides, expect in ((None, 1), (3, 3), (0, "from 1 to 3"), (4, "from 1 to 3"), ("2", "from 1 to 3")):
        m = {k: v for k, v in tiny.items() if k != "guides"} | ({} if guides is None else {"guides": guides})
        (tmp_path / "manifest.json").write_text(json.dumps(m))
        if isinstance(expect, int):
            assert manifest_models(str(tmp_path))["segmenters"] == tiny["segmenters"][:expect]
        else:
            with pytest.raises(TCIGInputError, match=f"'guides'.*{expect}"):
                manifest_models(str(tmp_path))


def test_two_guides_hold_a_nested_layout_before_the_judge(tiny, models, judge):
    """Five nested shapes at 64 px (a tuning layout, sampler seed 102): one guide alone can be fooled there
    (measured: it read 0.99 while the judge read 0.91 of its oracle, the smallest region 0.73); the
    default pair, whose blind spots differ, holds the layout before the judge. Thresholds: a share of
    the judge's own oracle on this layout, and the one-guide run of this same test as the baseline."""
    from tcig_ops.clip_guide import ClipGuide
    from tcig_ops.layout import layout_from_index_map
    from tcig_ops.prompts import parse_prompts
    from tcig_ops.sampler import sample_layout
    from tcig_ops.world import CLASSES

    idx, labels, kind = sample_layout(102, (64, 64), list(CLASSES))
    assert kind == "nested" and len(labels) == 5
    layout = layout_from_index_map(idx, labels)
    pair = [Guide(models["seg_a"]), Guide(models["seg_b"])]
    shares = {}
    for name, guides in (("one", pair[:1]), ("two", pair[: tiny["guides"]])):
        clip = ClipGuide(models["clip"], parse_prompts("a landscape"), cutn=8)
        r = run_stage1(models["vqgan"], layout, guides, Stage1Settings(width=64, height=64), clip_guide=clip)
        shares[name] = judge_report(judge, r.image, layout)["judge_share"]
    assert shares["two"] >= 0.85, shares  # measured 1.06 (the judge reads it better than the world's own rendering)
    assert shares["two"] >= shares["one"] - 0.02, shares  # measured 1.06 against 0.91
