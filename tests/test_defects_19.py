"""Issue 19: each defect reproduced from outside, on the tiny models (items 8, 9, 13 of stage 1,
item 1-2 and 13 of the batch are in test_batch.py, 3 in test_layout_memory.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, region_layout
from tcig_ops.clip_guide import ClipGuide
from tcig_ops.errors import TCIGInputError
from tcig_ops.layout import layout_from_index_map
from tcig_ops.prompts import parse_prompts
from tcig_ops.stage1 import Guide, RegionPrompt, Stage1Settings, StepInfo, level_sizes, run_stage1, split_steps

# --- 8. region prompts ----------------------------------------------------------------------------


def _thin_region_layout(size: int = 32):
    """grass, and a 1-px road column at x=5 between unpainted pixels (x 0-4 and 6-7)."""
    idx = torch.zeros(size, size, dtype=torch.long)
    idx[:, :8] = -1  # not painted
    idx[:, 5] = 1  # road: 1 px wide: a quarter of each 4x4 cell it lies in, the rest unpainted
    return layout_from_index_map(idx, ["grass", "road"])


def test_a_region_whose_coarse_cells_are_all_ignored_runs(models):
    layout = _thin_region_layout()
    assert not (layout.downsampled(8, 8).planes([1]) > 0).any()  # the region has no cell at the coarse level
    guide = ClipGuide(models["clip"], parse_prompts("a grey road"), cutn=2)
    s = Stage1Settings(width=32, height=32, iterations=4, levels=(0.25, 1.0), layout_start_steps=0, level_min_side=0)
    r = run_stage1(models["vqgan"], layout, [Guide(models["seg_a"])], s, region_prompts=[RegionPrompt("road", guide)])
    assert r.steps == 4 and any("no cell at 8x8" in n for n in r.notes), r.notes
    assert "region:road" in r.history[-1] and "region:road" not in r.history[0]  # its term runs on the full-size level


def test_one_px_region_with_three_levels_runs(models):
    idx = torch.zeros(32, 32, dtype=torch.long)
    idx[7, 9] = 1
    layout = layout_from_index_map(idx, ["grass", "road"])
    guide = ClipGuide(models["clip"], parse_prompts("a grey road"), cutn=2)
    s = Stage1Settings(
        width=32, height=32, iterations=6, levels=(0.25, 0.5, 1), level_steps=(1, 1, 1), layout_start_steps=0, level_min_side=0
    )
    r = run_stage1(models["vqgan"], layout, [Guide(models["seg_a"])], s, region_prompts=[RegionPrompt("road", guide)])
    assert r.steps == 6


def _stage1_cli(tiny, tmp_path, *extra):
    from tcig_ops.demo import demo_layout
    from tcig_ops.imageio import save_image
    from tcig_ops.world import LAYOUT_HEX

    save_image(demo_layout(32, 32), str(tmp_path / "lake.png"))
    classes = json.dumps({LAYOUT_HEX[k]: k for k in ("sky", "mountain", "water")})
    args = ["--vqgan", tiny["vqgan"], "--segmenter", tiny["segmenters"][0], "--layout", str(tmp_path / "lake.png")]
    args += ["--classes", classes, "--size", "32", "32", "--iterations", "2", "--out", str(tmp_path / "o.png"), *extra]
    return subprocess.run([sys.executable, "-m", "tcig_ops", "stage1", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--region-prompt", "water: a calm lake"], "--region-prompt needs the guidance CLIP (--clip)"),
        (["--clip-weight", "0", "--region-prompt", "volcano: lava"], "labels ['volcano'] are not in the layout"),
    ],
)
def test_cli_region_prompts_are_never_dropped_silently(tiny, tmp_path, extra, message):
    if "--clip-weight" in extra:
        extra = ["--clip", tiny["clip"], *extra]
    out = _stage1_cli(tiny, tmp_path, *extra)
    assert out.returncode == 2, out.stderr[-1500:]
    lines = [x for x in out.stderr.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], out.stderr[-1500:]
    assert not (tmp_path / "o.png").exists()


def test_region_prompts_at_clip_weight_0_cost_no_clip_work(models):
    calls = []

    class Counting(ClipGuide):
        def forward(self, image, fast=True):
            calls.append(1)
            return super().forward(image, fast)

    guide = Counting(models["clip"], parse_prompts("a grey road"), cutn=2)
    s = Stage1Settings(width=32, height=32, iterations=3, clip_weight=0.0, layout_start_steps=0)
    r = run_stage1(models["vqgan"], region_layout("road", 32), [Guide(models["seg_a"])], s, region_prompts=[RegionPrompt("road", guide)])
    assert r.steps == 3 and not calls and "region:road" not in r.history[-1]
    with pytest.raises(TCIGInputError, match="volcano"):  # unknown labels are refused at weight 0 too
        run_stage1(models["vqgan"], region_layout("road", 32), [Guide(models["seg_a"])], s, region_prompts=[RegionPrompt("volcano", guide)])


# --- 9. an init image keeps its detail through the coarse level -----------------------------------


def test_init_image_detail_survives_the_coarse_levels(models):
    from tcig_ops.world import sample

    vq = models["vqgan"]
    image, _ = sample(1, 64, torch.Generator().manual_seed(3))
    with torch.no_grad():
        roundtrip = vq.decode(vq.quantize_st(vq.encode(image)))
    # a learning rate that changes nothing: the result must be the init image's own VQGAN round trip
    s = Stage1Settings(width=64, height=64, iterations=2, lr=1e-9, clip_weight=0.0, level_min_side=0)
    assert len(level_sizes(s, vq.factor)) == 2  # coarse-to-fine is on
    r = run_stage1(vq, region_layout("lake", 64), [Guide(models["seg_a"])], s, init_image=image)
    err = (r.image - roundtrip).abs().mean().item()
    z = r.latent
    blocky = torch.equal(z[..., 0::2, 0::2], z[..., 1::2, 1::2])  # every 2x2 block of cells equal: detail lost
    assert err < 0.01 and not blocky, (err, blocky)


# --- 13. levels share exactly the iterations; the layout start is previewed once ------------------


@pytest.mark.parametrize("iterations", [1, 2, 3, 7, 100])
@pytest.mark.parametrize("levels", [(0.5, 1.0), (0.25, 0.5, 1.0)])
def test_levels_share_exactly_the_iterations(models, iterations, levels):
    s = Stage1Settings(
        width=64, height=64, iterations=iterations, levels=levels, level_steps=(1,) * len(levels), layout_start_steps=0, level_min_side=0
    )
    assert sum(n for *_, n in level_sizes(s, 16)) == iterations
    if iterations <= 3:
        r = run_stage1(models["vqgan"], region_layout("road", 64), [Guide(models["seg_a"])], s)
        assert r.steps == iterations and len(r.history) == iterations


def test_split_steps_adds_up_and_keeps_the_full_size_level():
    for total in range(1, 40):
        for fractions in ([0.5, 0.5], [0.2, 0.3, 0.5], [1.0], [3, 1]):
            counts = split_steps(total, fractions)
            assert sum(counts) == total and counts[-1] >= 1 and min(counts) >= 0


def test_the_layout_start_is_previewed_once(models):
    infos = []
    s = Stage1Settings(width=32, height=32, iterations=3, layout_start_steps=20)
    run_stage1(models["vqgan"], region_layout("road", 32), [Guide(models["seg_a"])], s, callback=infos.append)
    start = [i for i in infos if i.phase == "start"]
    assert len(start) == 20 and [i.start_step for i in start] == list(range(1, 21))
    previews = [i for i in infos if i.preview_due(10)]
    assert sum(i.phase == "start" for i in previews) == 1  # was 20: every start step is step 0
    assert [i.step for i in previews if i.phase != "start"] == [3]
    assert StepInfo(10, 30, 0.0, None, lambda: None).preview_due(10)


# --- 13. packaging ----------------------------------------------------------------------------------


def test_imported_packages_are_listed_and_the_id_avoids_comfyui():
    import tomllib

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["name"] == "tcig-layout"
    deps = " ".join(meta["project"]["dependencies"]) + (ROOT / "requirements.txt").read_text()
    for name in ("huggingface_hub", "filelock"):
        assert name in deps, name
    assert "comfyui-tcig" not in (ROOT / "README.md").read_text()
    assert os.path.isfile(ROOT / "requirements.txt")
