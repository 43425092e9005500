"""Batch throughput: jobs per minute in-process vs a local Ray pool of 1 and 2 workers, same jobs, one run.

    .venv/bin/python bench/batch_bench.py [--jobs 8] [--size 64] [--iterations 60]

Each engine runs the same sampled jobs (tiny models) into its own output folder, through the
real command (`python -m tcig_ops batch`), so start-up (Ray's and the model loading) counts.
Prints jobs/minute for each and the ratios against in-process, and Ray's per-job overhead:
the mean seconds a job took inside a 1-worker Ray actor minus the same job in-process (both
from summary.jsonl, so start-up is not in it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(args: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tcig_ops", "batch", *args], cwd=ROOT, check=True, capture_output=True, text=True)
    return time.perf_counter() - t


def seconds_per_job(out: str) -> dict[str, float]:
    with open(os.path.join(out, "summary.jsonl"), encoding="utf-8") as f:
        return {r["id"]: r["seconds"] for r in map(json.loads, f) if r["status"] == "ok"}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--jobs", type=int, default=8)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--iterations", type=int, default=60)
    a = p.parse_args()
    sys.path.insert(0, ROOT)
    from tcig_ops.tiny import cache_dir, write_tiny_models

    models = cache_dir(os.path.join(ROOT, ".cache"))
    if not os.path.isfile(os.path.join(models, "manifest.json")):
        write_tiny_models(models, quiet=True)
    cpus = os.cpu_count() or 1
    print(f"machine: {platform.processor() or platform.machine()}, {cpus} cpus; {a.jobs} jobs of {a.size}px x {a.iterations} iterations")
    with tempfile.TemporaryDirectory() as tmp:
        common = [
            "--models",
            models,
            "--sample-layouts",
            str(a.jobs),
            "--seed",
            "3",
            "--size",
            str(a.size),
            str(a.size),
            "--iterations",
            str(a.iterations),
        ]
        engines = {
            "in-process": ["--threads", str(cpus)],
            "ray local, 1 worker": ["--ray", "local", "--workers", "1", "--threads", str(cpus)],
            "ray local, 2 workers": ["--ray", "local", "--workers", "2"],
        }
        wall, per_job = {}, {}
        for name, extra in engines.items():
            out = os.path.join(tmp, name.replace(" ", "_").replace(",", ""))
            wall[name] = run(["--out", out, *common, *extra])
            per_job[name] = seconds_per_job(out)
        base = a.jobs / wall["in-process"] * 60
        for name in engines:
            rate = a.jobs / wall[name] * 60
            print(f"  {name:<22} {wall[name]:7.1f} s  {rate:6.2f} jobs/min  {rate / base:5.2f}x in-process")
        here, ray1 = per_job["in-process"], per_job["ray local, 1 worker"]
        common_ids = sorted(set(here) & set(ray1))
        overhead = sum(ray1[i] - here[i] for i in common_ids) / max(1, len(common_ids))
        print(
            f"Ray overhead per job (1 worker, same threads, job time inside the actor minus in-process): {overhead:+.2f} s "
            f"on a {sum(here[i] for i in common_ids) / max(1, len(common_ids)):.2f} s job"
        )


if __name__ == "__main__":
    main()
