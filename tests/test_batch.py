"""Batch generation: outputs, summary, failures, resume, Ray workers (killed ones too), engine independence."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT
from tcig_ops.errors import TCIGInputError

ITER = 12
SIZE = [48, 48]


def _jobs(tmp_path, n=8, bad: int | None = 3) -> str:
    """n small jobs on the demo layout (written once); job ``bad`` names a layout file that does not exist."""
    from tcig_ops.demo import demo_layout
    from tcig_ops.imageio import save_image
    from tcig_ops.world import LAYOUT_HEX

    save_image(demo_layout(48, 48), str(tmp_path / "lake.png"))
    (tmp_path / "classes.json").write_text(json.dumps({LAYOUT_HEX[k]: k for k in ("sky", "mountain", "water")}))
    lines = []
    for i in range(n):
        lines.append(
            {
                "id": f"job{i}",
                "layout": "missing.png" if i == bad else "lake.png",
                "classes": "classes.json",
                "prompt": "a mountain lake",
                "seed": i,
                "size": SIZE,
                "iterations": ITER,
            }
        )
    path = tmp_path / "jobs.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return str(path)


def _batch(*args, timeout=600, **kw):
    return subprocess.run(
        [sys.executable, "-m", "tcig_ops", "batch", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, **kw
    )


def _summary(out):
    with open(os.path.join(out, "summary.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _models_dir(tiny):
    return os.path.dirname(os.path.dirname(tiny["vqgan"]))


def test_in_process_batch_outputs_summary_and_a_failed_job(tiny, tmp_path):
    out = str(tmp_path / "out")
    r = _batch(_jobs(tmp_path), "--models", _models_dir(tiny), "--out", out, "--threads", "1")
    assert r.returncode == 0, r.stderr[-2000:]
    rows = _summary(out)
    assert sorted(x["id"] for x in rows) == [f"job{i}" for i in range(8)]
    ok = [x for x in rows if x["status"] == "ok"]
    failed = [x for x in rows if x["status"] == "failed"]
    assert len(ok) == 7 and len(failed) == 1 and failed[0]["id"] == "job3"
    assert all(0 <= x["judge_miou"] <= 1 for x in ok)  # the models folder's judge reads every result
    assert "missing.png" in failed[0]["error"] and "not found" in failed[0]["error"]
    for x in ok:
        d = tmp_path / "out" / x["id"]
        assert {p.name for p in d.iterdir()} == {"image.png", "target.png", "predicted.png", "report.json"}
        rep = json.loads((d / "report.json").read_text())
        assert rep["miou"] == pytest.approx(x["miou"]) and len(rep["history"]) == ITER
        from PIL import Image

        target = np.asarray(Image.open(d / "target.png"))
        assert target.shape == (48, 48) and set(np.unique(target)) <= {1, 2, 3}
    assert not (tmp_path / "out" / "job3").exists()
    csv_lines = (tmp_path / "out" / "summary.csv").read_text().splitlines()
    assert csv_lines[0] == "id,status,miou,seconds,worker,error,judge_miou" and len(csv_lines) == 9
    # a rerun does nothing
    again = _batch(_jobs(tmp_path), "--models", _models_dir(tiny), "--out", out, "--threads", "1")
    assert again.returncode == 0 and "0 ok, 0 failed, 8 already done" in again.stdout
    assert len(_summary(out)) == 8


def test_interrupted_batch_resumes_with_only_the_missing_jobs(tiny, tmp_path):
    out = str(tmp_path / "out")
    jobs = _jobs(tmp_path, n=6, bad=None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tcig_ops", "batch", jobs, "--models", _models_dir(tiny), "--out", out, "--threads", "1"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a test run started in the background by a shell without job control inherits SIGINT
        # ignored, and so would the batch: give it the default, as a terminal's Ctrl-C finds it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 300
    while time.time() < deadline:
        if os.path.isfile(os.path.join(out, "summary.jsonl")) and len(_summary(out)) >= 2:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    proc.wait(60)
    first = {x["id"] for x in _summary(out)}
    assert 2 <= len(first) < 6
    assert not [n for n in os.listdir(out) if n.startswith("job") and n not in first]  # no half-written job folder
    r = _batch(jobs, "--models", _models_dir(tiny), "--out", out, "--threads", "1")
    assert r.returncode == 0, r.stderr[-2000:]
    rows = _summary(out)
    assert sorted(x["id"] for x in rows) == [f"job{i}" for i in range(6)]  # each once
    assert f"{6 - len(first)} ok, 0 failed, {len(first)} already done" in r.stdout


def test_sampled_layouts_are_deterministic_by_seed(tmp_path):
    from tcig_ops.batch import read_jobs, sample_jobs

    a = sample_jobs(5, ["sky", "water", "grass", "road"], 7, str(tmp_path / "a"), (40, 32), 10)
    b = sample_jobs(5, ["sky", "water", "grass", "road"], 7, str(tmp_path / "b"), (40, 32), 10)
    c = sample_jobs(5, ["sky", "water", "grass", "road"], 8, str(tmp_path / "c"), (40, 32), 10)
    assert open(a).read() == open(b).read() and open(a).read() != open(c).read()
    for i in range(5):
        name = f"layout-{i:05d}.png"
        assert (tmp_path / "a" / "_sampled" / name).read_bytes() == (tmp_path / "b" / "_sampled" / name).read_bytes()
    jobs = read_jobs(a)
    assert len(jobs) == 5 and all(j.error is None and os.path.isfile(j.layout) and j.size == (40, 32) for j in jobs)
    with pytest.raises(TCIGInputError, match="at least two"):
        sample_jobs(2, ["sky"], 0, str(tmp_path / "d"))


def test_bad_job_lines_fail_alone_and_duplicate_ids_are_refused(tmp_path):
    from tcig_ops.batch import read_jobs

    p = tmp_path / "jobs.jsonl"
    c = '"classes": {"#000000": "sky"}'
    p.write_text(
        f'{{"id": "a", "layout": "x.png", {c}, "prompt": "p"}}\nnot json\n{{"id": "../b", "layout": "x", {c}, "prompt": "p"}}\n'
        f'{{"id": "c", "layout": "x.png", {c}, "prompt": "p", "size": [0, 3]}}\n'
        f'{{"id": "d", "layout": "x.png", {c}, "prompt": "p", "colour": 1}}\n'
    )
    jobs = read_jobs(str(p))
    assert [j.error is None for j in jobs] == [True, False, False, False, False]
    assert "not valid JSON" in jobs[1].error and "plain folder name" in jobs[2].error and "size" in jobs[3].error
    assert "unknown fields ['colour']" in jobs[4].error
    p.write_text(f'{{"id": "a", "layout": "x.png", {c}, "prompt": "p"}}\n' * 2)
    with pytest.raises(TCIGInputError, match="used twice"):
        read_jobs(str(p))


def test_batch_cli_errors_are_one_line(tmp_path):
    r = _batch("--out", str(tmp_path / "o"), "--models", str(tmp_path))
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "JOBS.jsonl file or --sample-layouts" in r.stderr


# ---- Ray ----------------------------------------------------------------------------------------

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray tests need ray: pip install -r requirements-dev.txt")


@needs_ray
def test_ray_local_two_workers_match_in_process_bit_for_bit(tiny, tmp_path):
    jobs = _jobs(tmp_path)
    out_ray, out_here = str(tmp_path / "ray"), str(tmp_path / "here")
    r = _batch(jobs, "--models", _models_dir(tiny), "--out", out_ray, "--ray", "local", "--workers", "2", "--threads", "1")
    assert r.returncode == 0, r.stderr[-3000:]
    rows = _summary(out_ray)
    assert sorted(x["id"] for x in rows) == [f"job{i}" for i in range(8)]
    assert sum(x["status"] == "ok" for x in rows) == 7 and [x["id"] for x in rows if x["status"] == "failed"] == ["job3"]
    assert len({x["worker"] for x in rows if x["status"] == "ok"}) == 2  # both actors worked
    h = _batch(jobs, "--models", _models_dir(tiny), "--out", out_here, "--threads", "1")
    assert h.returncode == 0, h.stderr[-2000:]
    for i in (0, 1, 2, 4, 5, 6, 7):
        a = open(os.path.join(out_ray, f"job{i}", "image.png"), "rb").read()
        b = open(os.path.join(out_here, f"job{i}", "image.png"), "rb").read()
        assert a == b, f"job{i} differs between Ray and in-process"


@needs_ray
def test_ray_worker_killed_mid_run_every_job_finishes_once(tiny, tmp_path):
    jobs = _jobs(tmp_path, n=8, bad=None)
    lines = [json.loads(x) for x in open(jobs)]
    for x in lines:
        x["iterations"] = 40  # long enough to kill a worker inside a job
    with open(jobs, "w") as f:
        f.writelines(json.dumps(x) + "\n" for x in lines)
    out = str(tmp_path / "out")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tcig_ops",
            "batch",
            jobs,
            "--models",
            _models_dir(tiny),
            "--out",
            out,
            "--ray",
            "local",
            "--workers",
            "2",
            "--threads",
            "1",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    pids_dir = os.path.join(out, "_workers")
    deadline = time.time() + 300
    killed = None
    while time.time() < deadline and proc.poll() is None:
        done = len(_summary(out)) if os.path.isfile(os.path.join(out, "summary.jsonl")) else 0
        pids = os.listdir(pids_dir) if os.path.isdir(pids_dir) else []
        if done >= 1 and len(pids) >= 2:
            killed = int(pids[0].split(".")[0])
            os.kill(killed, signal.SIGKILL)  # a worker dies in the middle of its next job
            break
        time.sleep(0.2)
    assert killed is not None, "the batch ended before a worker could be killed"
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    rows = _summary(out)
    assert sorted(x["id"] for x in rows) == [f"job{i}" for i in range(8)]  # every job exactly once
    assert all(x["status"] == "ok" for x in rows), rows
    assert len(os.listdir(pids_dir)) >= 3  # the killed actor was restarted
    assert not [n for n in os.listdir(out) if n.startswith("_tmp-")]


# --- issue 19: engine failures are not job failures; bad fields fail alone; bounded retries ------


def _rows_or_none(out):
    return _summary(out) if os.path.isfile(os.path.join(out, "summary.jsonl")) else []


@pytest.mark.parametrize("engine", ["here", pytest.param("ray", marks=needs_ray)])
def test_a_mistyped_model_path_ends_the_batch_before_any_job(tiny, tmp_path, engine):
    jobs, out = _jobs(tmp_path, n=3, bad=None), str(tmp_path / "out")
    typo = os.path.join(os.path.dirname(tiny["vqgan"]), "TYPO.ckpt")
    ray = ["--ray", "local", "--workers", "1"] if engine == "ray" else []
    r = _batch(jobs, "--vqgan", typo, "--segmenter", tiny["segmenters"][0], "--out", out, "--threads", "1", *ray)
    assert r.returncode == 2, r.stderr[-2000:]
    errors = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and "TYPO.ckpt" in errors[0], r.stderr[-2000:]
    assert _rows_or_none(out) == []  # nothing recorded: a rerun with the path fixed runs every job
    fixed = _batch(jobs, "--vqgan", tiny["vqgan"], "--segmenter", tiny["segmenters"][0], "--out", out, "--threads", "1", *ray)
    assert fixed.returncode == 0 and "3 ok, 0 failed, 0 already done" in fixed.stdout, fixed.stderr[-2000:]


@needs_ray
def test_ray_workers_that_cannot_load_the_models_record_nothing(tiny, tmp_path):
    """The file exists (the driver's check passes) but is no checkpoint: every actor's constructor fails."""
    jobs, out = _jobs(tmp_path, n=3, bad=None), str(tmp_path / "out")
    broken = tmp_path / "broken.ckpt"
    broken.write_text("<html>not a checkpoint</html>")
    cfg = os.path.splitext(tiny["vqgan"])[0] + ".yaml"
    r = _batch(jobs, "--vqgan", str(broken), "--vqgan-config", cfg, "--segmenter", tiny["segmenters"][0], "--out", out, "--ray", "local")
    assert r.returncode == 2, r.stderr[-2000:]
    errors = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and "could not load the models" in errors[0] and "\x1b[" not in errors[0], r.stderr[-2000:]
    assert _rows_or_none(out) == []


def test_bad_field_types_fail_alone_with_the_field_named(tiny, tmp_path):
    good = json.loads(open(_jobs(tmp_path, n=1, bad=None)).readline())
    bad = {
        "lr-text": {"lr": "0.1"},
        "layout-number": {"layout": 5},
        "seed-bool": {"seed": True},
        "size-zero": {"size": [0, 48]},
        "levels-text": {"levels": "0.5,1"},
        "regions-number": {"region_prompts": 5},
        "prompt-list": {"prompt": ["a", "b"]},
    }
    lines = [dict(good, id=name, **fields) for name, fields in bad.items()] + [dict(good, id="fine")]
    path = tmp_path / "jobs.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = str(tmp_path / "out")
    r = _batch(str(path), "--models", _models_dir(tiny), "--out", out, "--threads", "1")
    assert r.returncode == 0, r.stderr[-2000:]
    rows = {x["id"]: x for x in _summary(out)}
    assert rows["fine"]["status"] == "ok"
    for name, fields in bad.items():
        (field,) = fields
        assert rows[name]["status"] == "failed" and f"field '{field}'" in rows[name]["error"], rows[name]
    assert "Traceback" not in r.stderr


def test_failed_jobs_rerun_only_when_asked(tiny, tmp_path):
    out = str(tmp_path / "out")
    jobs = _jobs(tmp_path, n=2, bad=1)
    assert _batch(jobs, "--models", _models_dir(tiny), "--out", out, "--threads", "1").returncode == 0
    (tmp_path / "missing.png").write_bytes((tmp_path / "lake.png").read_bytes())  # the user fixes the job's input
    plain = _batch(jobs, "--models", _models_dir(tiny), "--out", out, "--threads", "1")
    assert "0 ok, 0 failed, 2 already done" in plain.stdout
    retry = _batch(jobs, "--models", _models_dir(tiny), "--out", out, "--threads", "1", "--retry-failed")
    assert "1 ok, 0 failed, 1 already done" in retry.stdout, retry.stdout + retry.stderr[-1500:]
    rows = _summary(out)
    assert [(x["id"], x["status"]) for x in rows] == [("job0", "ok"), ("job1", "failed"), ("job1", "ok")]
    csv_lines = (tmp_path / "out" / "summary.csv").read_text().splitlines()
    assert len(csv_lines) == 4 and csv_lines[-1].startswith("job1,ok,")  # appended, one row per summary line


if importlib.util.find_spec("ray") is not None:
    from tcig_ops.batch import RayWorker

    class CrashingWorker(RayWorker):
        """A worker whose process dies (as out of memory would kill it) on the job named 'crash'."""

        def run(self, job):
            if job.id == "crash":
                with open(os.path.join(self.out, "_attempts"), "a", encoding="ascii") as f:
                    f.write("x")
                os._exit(1)
            return super().run(job)


@needs_ray
def test_a_job_that_kills_its_worker_is_retried_three_times_then_failed(tiny, tmp_path):
    import ray.cloudpickle

    from tcig_ops.batch import MAX_ATTEMPTS, read_jobs, run_batch

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the actors can build the test's class
    good = json.loads(open(_jobs(tmp_path, n=1, bad=None)).readline())
    path = tmp_path / "jobs.jsonl"
    path.write_text("".join(json.dumps(dict(good, id=i)) + "\n" for i in ("a", "crash", "b")))
    out = str(tmp_path / "out")
    models = {"vqgan": tiny["vqgan"], "segmenters": [tiny["segmenters"][0]]}
    counts = run_batch(read_jobs(str(path)), models, out, "local", workers=1, threads=1, worker_cls=CrashingWorker)
    assert counts["ok"] == 2 and counts["failed"] == 1, counts
    rows = {x["id"]: x for x in _summary(out)}
    assert rows["crash"]["status"] == "failed" and f"died {MAX_ATTEMPTS} times" in rows["crash"]["error"]
    assert open(os.path.join(out, "_attempts")).read() == "x" * MAX_ATTEMPTS, rows["crash"]["error"]
    assert rows["a"]["status"] == rows["b"]["status"] == "ok"
