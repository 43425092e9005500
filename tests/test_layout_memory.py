"""A big painting stays cheap: decoding a 2048x2048, 64-label painting and building its Layout
keeps the process's peak memory low (measured in a fresh subprocess, VmHWM), and corrupt big
values are refused before anything of their size is allocated."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the peak RSS from /proc/self/status (Linux)")

# what the subprocess runs: imports first (their memory is not the painting's), then the work;
# it prints the peak RSS before and after the work, and the seconds the work took
CHILD = r"""
import json, sys, time
import numpy as np, torch
from tcig_ops.painter import layout_from_painting, preview_image
from tcig_ops.errors import TCIGInputError

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

value = open(sys.argv[1], encoding="utf-8").read()
torch.zeros(1)
before = hwm()
t0 = time.perf_counter()
try:
    layout, colors, names = layout_from_painting(value)
    planes = layout.subset(layout.labels[:1])[0]  # one plane, as stage 1 binds a guide's labels (at its own size)
    small = layout.resized(512, 512)  # stage 1 works at its own size
    targets = small.targets
    result = {"labels": len(layout.labels), "size": list(layout.size), "index": str(layout.index_map().dtype),
              "plane_sum": float(planes.sum()), "small": list(targets.shape)}
except TCIGInputError as exc:
    result = {"error": str(exc)}
seconds = time.perf_counter() - t0
print(json.dumps({"before": before, "after": hwm(), "seconds": seconds, **result}))
"""


def _measure(tmp_path, value: str) -> dict:
    path = tmp_path / "painting.json"
    path.write_text(value, encoding="utf-8")
    out = subprocess.run([sys.executable, "-c", CHILD, str(path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _big_painting() -> tuple[str, np.ndarray]:
    from tcig_ops.painter import encode_painting

    m = np.zeros((2048, 2048), np.uint8)
    for k in range(64):  # 64 bands of 32 rows: a valid, small (2.5 KB) value
        m[k * 32 : (k + 1) * 32] = k + 1
    return encode_painting(m, [f"label {k}" for k in range(64)]), m


def test_a_2048_px_64_label_painting_decodes_into_a_small_layout(tmp_path):
    value, _ = _big_painting()
    assert len(value) < 4000
    r = _measure(tmp_path, value)
    added = (r["after"] - r["before"]) / 2**20
    print(f"2048x2048, 64 labels: peak {r['after'] / 2**20:.0f} MB ({added:.0f} MB over the imports), {r['seconds']:.2f} s")
    assert r["labels"] == 64 and r["size"] == [2048, 2048] and r["index"] == "torch.int64"
    assert r["plane_sum"] == 32 * 2048 and r["small"] == [64, 512, 512]
    # 64 float planes at full size would be 1 GiB; the index map is 8 MB (int16)
    assert added < 300, r


def test_a_corrupt_32_mb_value_is_refused_without_allocating_its_size(tmp_path):
    value, _ = _big_painting()
    data = json.loads(value)
    data["rle"] = "A" * (30 * 2**20)  # valid base64, far more runs than 2048x2048 pixels can have
    r = _measure(tmp_path, json.dumps(data))
    assert "longer than any 2048x2048 map" in r["error"], r
    assert (r["after"] - r["before"]) / 2**20 < 200, r
