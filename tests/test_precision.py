"""Precision follows the hardware: 'auto' resolves per device (a cached bf16 probe on CPUs), the
report says what ran and why, and bf16 reaches the control fp32 reaches (judged by a segmenter
that did not guide)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from conftest import ROOT, region_layout
from tcig_ops import precision
from tcig_ops.errors import TCIGInputError
from tcig_ops.stage1 import Guide, Stage1Settings, run_stage1


def test_choose_explicit_auto_and_bad_values():
    assert precision.choose("fp16", "cpu") == ("fp16", "asked for")
    with pytest.raises(TCIGInputError, match="use one of auto, fp32, bf16, fp16"):
        precision.choose("half", "cpu")
    chosen, why = precision.choose("auto", "cpu")
    native = precision.cpu_native_bf16()
    if native is None:  # a CPU whose flags torch cannot read: the timed probe decides
        speedup = precision.cpu_bf16_speedup()
        assert chosen == ("bf16" if speedup >= precision.CPU_BF16_MIN_SPEEDUP else "fp32") and "auto:" in why, (chosen, why, speedup)
    else:  # x86: the CPU's flags decide, the same in every process whatever the load
        assert chosen == ("bf16" if native else "fp32") and "auto:" in why, (chosen, why, native)
    t0 = time.perf_counter()
    assert precision.choose("auto", "cpu")[0] == chosen  # decided once (flags, or the probe cached in this process)
    assert time.perf_counter() - t0 < 0.05


def test_auto_is_the_same_in_a_loaded_process():
    """The choice a batch's workers and a second run make under load is the one made here (a timed
    probe once chose fp32 in a Ray driver and bf16 in the in-process run on the same EPYC)."""
    if precision.cpu_native_bf16() is None:
        pytest.skip("this CPU's bf16 flags are unknown to torch: the timed probe decides there")
    code = "from tcig_ops.precision import choose; print(choose('auto', 'cpu')[0])"
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]  # both cores busy
    try:
        got = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    finally:
        for b in busy:
            b.kill()
    assert got.returncode == 0, got.stderr
    assert got.stdout.strip() == precision.choose("auto", "cpu")[0]


def test_a_run_says_which_precision_ran(models):
    s = Stage1Settings(width=32, height=32, iterations=2, precision="auto", layout_start_steps=0)
    r = run_stage1(models["vqgan"], region_layout("road", 32), [Guide(models["seg_a"])], s)
    assert r.precision == precision.choose("auto", "cpu")[0]
    assert any(n.startswith(f"precision {r.precision} (auto:") for n in r.notes), r.notes
    with pytest.raises(TCIGInputError, match="precision"):
        run_stage1(models["vqgan"], region_layout("road", 32), [Guide(models["seg_a"])], Stage1Settings(precision="fp64"))


@pytest.mark.skipif(
    precision.cpu_bf16_speedup() < 0.5, reason="bf16 is emulated on this CPU (far slower than fp32): the comparison would take minutes"
)
@pytest.mark.parametrize("kind", ["lake", "beach"])
def test_bf16_reaches_the_control_of_fp32_by_a_segmenter_that_did_not_guide(models, kind):
    from tcig_ops.metrics import predict_in_layout_space

    layout = region_layout(kind, 64)
    judge = models["seg_b"]  # never guides here

    def judged(prec):
        s = Stage1Settings(width=64, height=64, iterations=120, precision=prec)
        r = run_stage1(models["vqgan"], layout, [Guide(models["seg_a"])], s)
        assert r.precision == prec
        pred, _ = predict_in_layout_space(judge, r.image, layout)
        return _miou(pred, layout)

    fp32, bf16 = judged("fp32"), judged("bf16")
    assert abs(bf16 - fp32) <= 0.05, (fp32, bf16)


def _miou(pred, layout) -> float:
    import torch

    target = layout.index_map()
    ious = []
    for k in range(len(layout.labels)):
        inter = ((pred == k) & (target == k)).sum().item()
        union = ((pred == k) | (target == k)).sum().item()
        ious.append(inter / union if union else 1.0)
    return float(torch.tensor(ious).mean())


def test_cli_precision_flag_and_report(tiny, tmp_path):
    from tcig_ops.demo import demo_layout
    from tcig_ops.imageio import save_image
    from tcig_ops.world import LAYOUT_HEX

    save_image(demo_layout(32, 32), str(tmp_path / "lake.png"))
    classes = json.dumps({LAYOUT_HEX[k]: k for k in ("sky", "mountain", "water")})
    args = ["--vqgan", tiny["vqgan"], "--segmenter", tiny["segmenters"][0], "--layout", str(tmp_path / "lake.png"), "--classes", classes]
    args += ["--size", "32", "32", "--iterations", "2", "--out", str(tmp_path / "o.png"), "--report", str(tmp_path / "r.json")]
    out = subprocess.run(
        [sys.executable, "-m", "tcig_ops", "stage1", *args, "--precision", "fp32"], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-1500:]
    assert json.loads((tmp_path / "r.json").read_text())["precision"] == "fp32"
    bad = subprocess.run(
        [sys.executable, "-m", "tcig_ops", "stage1", *args, "--precision", "fp64"], cwd=ROOT, capture_output=True, text=True
    )
    assert bad.returncode == 2 and "precision" in bad.stderr
