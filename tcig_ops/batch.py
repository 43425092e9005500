"""Batch generation: many stage-1 jobs, in this process or on Ray actors, resumable and exact.

A job is one line of a JOBS.jsonl file::

    {"id": "lake-1", "layout": "layouts/lake.png", "classes": {"#87ceeb": "sky"} | "classes.json",
     "prompt": "...", "seed": 0, "size": [W, H], "iterations": 300, ...overrides}

(relative paths are relative to the JOBS file; optional overrides: lr, clip_weight, cutn,
cut_pow, target_miou, plateau_steps, levels, level_steps, region_prompts).

Each finished job has ``OUT/<id>/`` with image.png, target.png (label-index map), predicted.png
(the guiding segmenter's map of the result) and report.json, written into a temporary folder
and renamed, and one line in ``OUT/summary.jsonl`` (id, status ok|failed, miou, seconds,
worker, error), appended and flushed only after the folder is in place; ``summary.csv``
mirrors it. A job counts as done only when its summary line exists, so a rerun of the same
command skips finished jobs and runs the rest. Only the driver writes the summary, so a job
retried after a worker died is recorded once.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import shutil
import socket
import sys
import time
from dataclasses import dataclass, field

from .errors import TCIGInputError

OVERRIDES = {"lr", "clip_weight", "cutn", "cut_pow", "target_miou", "plateau_steps", "levels", "level_steps", "region_prompts", "precision"}
REQUIRED = ("id", "layout", "classes", "prompt")
SUMMARY_FIELDS = ("id", "status", "miou", "seconds", "worker", "error", "judge_miou")  # judge_miou: with a judge


@dataclass
class Job:
    id: str
    layout: str  # absolute path of the colour-coded layout PNG
    classes: str  # class map JSON text
    prompt: str
    seed: int = 0
    size: tuple[int, int] = (128, 128)
    iterations: int = 300
    overrides: dict = field(default_factory=dict)
    error: str | None = None  # a job line that could not be read: recorded as failed, never run


def _job_error(line_no: int, raw: object, message: str) -> Job:
    jid = raw.get("id") if isinstance(raw, dict) and isinstance(raw.get("id"), str) else f"line-{line_no}"
    return Job(jid, "", "", "", error=message)


def read_jobs(path: str) -> list[Job]:
    """Jobs of a JOBS.jsonl file. A line with bad fields becomes a job that fails with that message
    (the batch goes on); a file that cannot be read at all, or repeated ids, are refused."""
    if not os.path.isfile(path):
        raise TCIGInputError(f"jobs: file not found: {path}")
    base = os.path.dirname(os.path.abspath(path))
    jobs, seen = [], set()
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except ValueError as exc:
                jobs.append(_job_error(n, None, f"jobs line {n}: not valid JSON ({exc})"))
                continue
            job = _parse_job(raw, n, base)
            if job.id in seen:
                raise TCIGInputError(f"jobs line {n}: id {job.id!r} is used twice; give every job its own id")
            seen.add(job.id)
            jobs.append(job)
    if not jobs:
        raise TCIGInputError(f"jobs: {path} lists no jobs")
    return jobs


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _numbers(v) -> bool:
    return isinstance(v, list) and len(v) > 0 and all(_is_number(x) and x > 0 for x in v)


# each field a job line may hold: (check, what it must be)
FIELD_TYPES: dict[str, tuple] = {
    "id": (lambda v: isinstance(v, str), "a string"),
    "layout": (lambda v: isinstance(v, str) and v.strip() != "", "a path to a colour-coded layout PNG (a string)"),
    "classes": (lambda v: isinstance(v, (str, dict)) and bool(v), 'a class map object like {"#87ceeb": "sky"} or a JSON file path'),
    "prompt": (lambda v: isinstance(v, str), "a string"),
    "seed": (lambda v: _is_int(v) and v >= 0, "a whole number >= 0"),
    "size": (lambda v: isinstance(v, list) and len(v) == 2 and all(_is_int(x) and x > 0 for x in v), "[width, height] in pixels"),
    "iterations": (lambda v: _is_int(v) and v >= 1, "a whole number >= 1"),
    "lr": (lambda v: _is_number(v) and v > 0, "a positive number, e.g. 0.2"),
    "clip_weight": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    "cutn": (lambda v: _is_int(v) and v >= 1, "a whole number >= 1"),
    "cut_pow": (lambda v: _is_number(v) and v > 0, "a positive number"),
    "target_miou": (lambda v: v is None or (_is_number(v) and 0 < v <= 1), "a number in (0, 1] or null"),
    "plateau_steps": (lambda v: v is None or (_is_int(v) and v >= 1), "a whole number >= 1 or null"),
    "levels": (lambda v: v is None or _numbers(v), "a list of scales like [0.5, 1] or null"),
    "level_steps": (lambda v: v is None or _numbers(v), "a list of positive shares like [0.5, 0.5] or null"),
    "precision": (lambda v: v in ("auto", "fp32", "bf16", "fp16"), 'one of "auto", "fp32", "bf16", "fp16"'),
    "region_prompts": (
        lambda v: isinstance(v, str) or (isinstance(v, dict) and all(isinstance(k, str) and isinstance(x, str) for k, x in v.items())),
        "'label: prompt' lines (a string) or an object {label: prompt}",
    ),
}


def _parse_job(raw: object, n: int, base: str) -> Job:
    """One job line -> Job; every field's type is checked here, so a bad line fails alone with a
    message naming its field instead of failing (or crashing the batch) once it runs."""
    if not isinstance(raw, dict):
        return _job_error(n, raw, f"jobs line {n}: expected a JSON object")
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        return _job_error(n, raw, f"jobs line {n}: missing {missing}; a job needs {list(REQUIRED)}")
    jid = raw["id"]
    if not isinstance(jid, str) or not jid or jid != os.path.basename(jid) or jid in (".", "..") or jid.startswith("_"):
        return _job_error(n, raw, f"jobs line {n}: id {jid!r} must be a plain folder name (no '/', not starting with '_')")
    unknown = sorted(set(raw) - set(REQUIRED) - {"seed", "size", "iterations"} - OVERRIDES)
    if unknown:
        return _job_error(n, raw, f"job {jid}: unknown fields {unknown}; overrides are {sorted(OVERRIDES)}")
    for key, value in raw.items():
        ok, what = FIELD_TYPES[key]
        if not ok(value):
            return _job_error(n, raw, f"job {jid}: field {key!r} is {json.dumps(value)[:60]}; it must be {what}")
    if "levels" in raw and raw.get("level_steps") is not None and raw["levels"] is not None:
        if len(raw["level_steps"]) != len(raw["levels"]):
            return _job_error(n, raw, f"job {jid}: field 'level_steps' needs one share per level ({len(raw['levels'])})")
    classes = raw["classes"]
    try:
        if isinstance(classes, str) and not classes.strip().startswith("{"):
            cpath = classes if os.path.isabs(classes) else os.path.join(base, classes)
            with open(cpath, encoding="utf-8") as f:
                classes = f.read()
        elif isinstance(classes, dict):
            classes = json.dumps(classes)
    except OSError as exc:
        return _job_error(n, raw, f"job {jid}: classes file cannot be read ({exc.strerror}: {exc.filename})")
    size = raw.get("size", [128, 128])
    layout = raw["layout"] if os.path.isabs(raw["layout"]) else os.path.join(base, raw["layout"])
    overrides = {k: raw[k] for k in OVERRIDES if k in raw}
    return Job(jid, layout, classes, raw["prompt"], raw.get("seed", 0), (size[0], size[1]), raw.get("iterations", 300), overrides)


# ---- running one job ------------------------------------------------------------------------


class Worker:
    """Loads the models once and runs jobs; the same class runs in-process and inside a Ray actor."""

    def __init__(self, models: dict, out: str, threads: int | None = None, device: str = "cpu", name: str | None = None):
        import torch

        if threads:
            torch.set_num_threads(threads)  # this process is the worker's own (CLI or Ray actor)
        from . import runner

        self.out, self.device = out, device
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.models = runner.load_models(
            models["vqgan"], models.get("clip"), models["segmenters"], device, models.get("vqgan_config"), models.get("clip_arch")
        )
        self.specs = [runner.parse_segmenter_spec(p) for p in models["segmenters"]]
        from .precision import choose

        self.precision = choose(models.get("precision", "auto"), device)[0]  # the CLI resolves "auto" in the driver
        self.judge = runner.load_segmenter(models["judge"], device=device) if models.get("judge") else None

    def pid(self) -> int:
        return os.getpid()

    def run(self, job: Job) -> dict:
        """Run one job; outputs land in OUT/<id>/ whole or not at all. Returns its summary row."""
        t0 = time.perf_counter()
        try:
            if job.error:
                raise TCIGInputError(job.error)
            data = self._run(job)
            return {
                "id": job.id,
                "status": "ok",
                "miou": data["miou"],
                "judge_miou": data.get("judge_miou"),
                "seconds": round(time.perf_counter() - t0, 3),
                "worker": self.name,
                "error": "",
            }
        except Exception as exc:  # one job's failure (bad input, or a bug it hits) never ends the batch
            message = str(exc) if isinstance(exc, TCIGInputError) else f"{type(exc).__name__}: {exc}"
            return {
                "id": job.id,
                "status": "failed",
                "miou": None,
                "seconds": round(time.perf_counter() - t0, 3),
                "worker": self.name,
                "error": plain_text(message),
            }

    def _run(self, job: Job) -> dict:
        from . import runner
        from .imageio import save_image
        from .metrics import predict_in_layout_space
        from .prompts import parse_region_prompts
        from .stage1 import Stage1Settings

        o = dict(job.overrides)
        extra = {
            k: (tuple(o[k]) if k in ("levels", "level_steps") and o[k] is not None else o[k])
            for k in ("lr", "clip_weight", "target_miou", "plateau_steps", "levels", "level_steps", "precision")
            if k in o
        }
        if extra.get("precision", "auto") == "auto":  # the driver's choice for this batch
            extra["precision"] = self.precision
        if "levels" in extra:
            extra.setdefault("level_steps", None)
        settings = Stage1Settings(width=job.size[0], height=job.size[1], iterations=job.iterations, seed=job.seed, **extra)
        if self.models.clip is None:
            settings.clip_weight = 0.0
        layout = runner.load_layout(job.layout, job.classes)
        regions = parse_region_prompts(o.get("region_prompts", "")) if isinstance(o.get("region_prompts", ""), str) else o["region_prompts"]
        result = runner.run(
            self.models,
            self.specs,
            layout,
            job.prompt,
            settings,
            int(o.get("cutn", 16)),
            float(o.get("cut_pow", 1.0)),
            region_prompts=regions,
        )
        from .report import stage1_report

        H, W = result.image.shape[-2:]
        lay = layout.resized(H, W)
        pred, _ = predict_in_layout_space(self.models.segmenters[0], result.image, lay)
        final = os.path.join(self.out, job.id)
        tmp = os.path.join(self.out, f"_tmp-{job.id}-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        save_image(result.image, os.path.join(tmp, "image.png"))
        _save_index_map(lay.index_map(), os.path.join(tmp, "target.png"))
        _save_index_map(pred, os.path.join(tmp, "predicted.png"))
        data = stage1_report(result, self.device, {"job": job.id, "seed": job.seed, "size": list(job.size), **o})
        data["labels"] = lay.labels
        if self.judge is not None:
            from .judge import judge_report

            data.update(judge_report(self.judge, result.image, layout))
        with open(os.path.join(tmp, "report.json"), "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
        if os.path.isdir(final):  # a retry of a job whose worker died after writing: replace it whole
            shutil.rmtree(final)
        os.replace(tmp, final)
        return data


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def plain_text(text: str) -> str:
    """``text`` without terminal colour codes (Ray colours its tracebacks), on one line."""
    return " ".join(_ANSI.sub("", text).split())


def _save_index_map(idx, path: str) -> None:
    """Label-index map (H, W) -> 8-bit PNG: label k is k + 1, 0 is ignored / no layout label."""
    import numpy as np
    from PIL import Image

    Image.fromarray((idx.numpy() + 1).clip(0, 255).astype(np.uint8), mode="L").save(path)


# ---- the summary ------------------------------------------------------------------------------


class Summary:
    """OUT/summary.jsonl (appended, flushed and synced per line) and OUT/summary.csv (appended per
    line too; rewritten whole only when opening finds it out of step with the JSONL)."""

    def __init__(self, out: str):
        self.path = os.path.join(out, "summary.jsonl")
        self.csv = os.path.join(out, "summary.csv")
        self.rows: list[dict] = []
        if os.path.isfile(self.path):
            cut = False
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    try:
                        self.rows.append(json.loads(line))
                    except ValueError:
                        cut = True  # a line cut by a crash: that job is not done and runs again
                        break
            if cut:
                self._rewrite_jsonl()
        if self._csv_rows() != len(self.rows):
            self._rewrite_csv()

    @property
    def done(self) -> set[str]:
        """Jobs with a row (ok or failed)."""
        return {r["id"] for r in self.rows}

    @property
    def done_ok(self) -> set[str]:
        """Jobs whose latest row is ok."""
        latest = {r["id"]: r["status"] for r in self.rows}
        return {k for k, v in latest.items() if v == "ok"}

    def add(self, row: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({k: row.get(k) for k in SUMMARY_FIELDS}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.rows.append(row)
        with open(self.csv, "a", encoding="utf-8", newline="") as f:
            csv.DictWriter(f, fieldnames=SUMMARY_FIELDS, lineterminator="\n").writerow({k: row.get(k) for k in SUMMARY_FIELDS})

    def _csv_rows(self) -> int:
        """Data rows of summary.csv (-1 when it is missing or has no header)."""
        if not os.path.isfile(self.csv):
            return -1
        with open(self.csv, encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f))
        return len(rows) - 1 if rows and tuple(rows[0]) == SUMMARY_FIELDS else -1

    def _rewrite_jsonl(self) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(json.dumps({k: r.get(k) for k in SUMMARY_FIELDS}) + "\n" for r in self.rows)
        os.replace(tmp, self.path)

    def _rewrite_csv(self) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=SUMMARY_FIELDS, lineterminator="\n")
        w.writeheader()
        for r in self.rows:
            w.writerow({k: r.get(k) for k in SUMMARY_FIELDS})
        tmp = self.csv + ".tmp"
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(buf.getvalue())
        os.replace(tmp, self.csv)


class Progress:
    """tqdm bar: jobs done (ok + failed), failures, jobs per minute and the ETA."""

    def __init__(self, total: int, initial: int):
        from tqdm import tqdm

        self.t0, self.ran, self.failed = time.perf_counter(), 0, 0
        self.bar = tqdm(total=total, initial=initial, desc="jobs", unit="job", file=sys.stderr, dynamic_ncols=True)

    def update(self, row: dict) -> None:
        self.ran += 1
        self.failed += row["status"] != "ok"
        rate = self.ran / max(1e-9, time.perf_counter() - self.t0) * 60
        self.bar.set_postfix(failed=self.failed, jobs_per_min=f"{rate:.1f}")
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


# ---- engines ----------------------------------------------------------------------------------


MAX_ATTEMPTS = 3  # runs of one job whose worker process died (out of memory, a crash) before it is recorded as failed


def check_models(models: dict) -> None:
    """Refuse missing model files in the driver, before any worker starts or any job is recorded:
    a wrong path is the batch's error (exit 2), not every job's."""
    paths = [(f"--{k.replace('_', '-')}", models.get(k)) for k in ("vqgan", "vqgan_config", "clip", "judge")]
    from .runner import parse_segmenter_spec

    paths += [("--segmenter", parse_segmenter_spec(p).path) for p in models.get("segmenters") or []]
    for flag, path in paths:
        if path and not os.path.exists(path):
            raise TCIGInputError(f"{flag}: model not found: {path}; check the path (nothing was run or recorded)")


def run_batch(
    jobs: list[Job],
    models: dict,
    out: str,
    ray_address: str | None = None,
    workers: int = 1,
    threads: int | None = None,
    gpus_per_worker: float = 0.0,
    device: str = "cpu",
    log=None,
    retry_failed: bool = False,
    worker_cls: type | None = None,
) -> dict:
    """Run every job not yet in OUT/summary.jsonl; returns counts. ``ray_address`` None runs here,
    "local" starts a local Ray pool of ``workers`` actors, anything else joins that cluster.

    A job recorded as failed is done too (its error does not go away by itself); with
    ``retry_failed`` such jobs run again and their new row follows the old one. The models are
    checked (paths here, loading in each worker) before any job runs: a batch whose models
    cannot load stops with a TCIGInputError and records nothing. ``worker_cls``: the Ray actor class
    (a RayWorker subclass), for embedding."""
    check_models(models)
    os.makedirs(out, exist_ok=True)
    for name in os.listdir(out):  # leftovers of jobs cut short: never counted, removed
        if name.startswith("_tmp-"):
            shutil.rmtree(os.path.join(out, name), ignore_errors=True)
    summary = Summary(out)
    done = summary.done_ok if retry_failed else summary.done
    todo = [j for j in jobs if j.id not in done]
    counts = {"jobs": len(jobs), "skipped": len(jobs) - len(todo), "ok": 0, "failed": 0}
    if not todo:
        return counts
    progress = None

    def record(row: dict) -> None:
        summary.add(row)
        counts["ok" if row["status"] == "ok" else "failed"] += 1
        progress.update(row)
        if log:
            log(row)

    try:
        if ray_address is None:
            worker = Worker(models, out, threads or _threads_per_worker(1), device)  # a load error ends the batch here
            progress = Progress(len(jobs), counts["skipped"])
            for job in todo:
                record(worker.run(job))
        else:

            def started():
                nonlocal progress
                progress = Progress(len(jobs), counts["skipped"])

            _run_on_ray(todo, models, out, ray_address, workers, threads, gpus_per_worker, device, record, started, worker_cls)
    finally:
        if progress is not None:
            progress.close()
    return counts


def _threads_per_worker(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def ray_or_explain():
    try:
        import ray
    except ImportError:
        raise TCIGInputError(
            "--ray needs Ray, which is an optional extra: pip install -r requirements-batch.txt (or pip install 'ray>=2.9'); "
            "without --ray the batch runs in this process"
        ) from None
    return ray


def _cause(exc: Exception) -> str:
    """The first meaningful line of a Ray error, without colour codes."""
    lines = [plain_text(x) for x in str(exc).splitlines()]
    lines = [x for x in lines if x and not x.startswith(("Traceback", "File ", "ray::", "^"))]
    for x in reversed(lines):  # the raised exception's own line is the last one that names an error type
        if re.match(r"^[\w.]*(Error|Exception)\b", x):
            return x
    return lines[0] if lines else type(exc).__name__


def _wait_ready(ray, actor, timeout: float = 600) -> None:
    """Wait until a restarted actor has loaded its models again; one whose restart fails is the
    engine's failure (TCIGInputError), not the job's."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            ray.get(actor.pid.remote(), timeout=timeout)
            return
        except ray.exceptions.ActorUnavailableError:
            if time.monotonic() > deadline:
                raise TCIGInputError("a Ray worker did not come back after it died; the unfinished jobs were not recorded") from None
            time.sleep(0.5)
        except ray.exceptions.RayError as exc:
            raise TCIGInputError(f"a Ray worker could not restart: {_cause(exc)}; the unfinished jobs were not recorded") from None


def _run_on_ray(todo, models, out, address, workers, threads, gpus_per_worker, device, record, started=None, worker_cls=None) -> None:
    ray = ray_or_explain()
    started_here = address == "local"
    if started_here:
        ray.init(num_cpus=workers, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    else:
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    try:
        per = threads or _threads_per_worker(workers)
        # an actor whose process dies is restarted (models loaded again); the driver, not Ray, retries
        # the job it was running, at most MAX_ATTEMPTS times, so a job that kills every process it runs
        # in is recorded as failed instead of being retried for ever
        actor_cls = ray.remote(num_cpus=1, num_gpus=gpus_per_worker, max_restarts=-1, max_task_retries=0)(worker_cls or RayWorker)
        pool = [actor_cls.remote(models, out, per, device if not gpus_per_worker else "cuda", f"ray-worker-{i}") for i in range(workers)]
        try:  # every actor has loaded the models before any job is sent: a load error is the batch's, not the jobs'
            ray.get([a.pid.remote() for a in pool])
        except ray.exceptions.RayError as exc:
            raise TCIGInputError(f"the Ray workers could not load the models: {_cause(exc)} (nothing was run or recorded)") from None
        if started:
            started()
        attempts: dict[str, int] = {}
        pending: dict = {}
        queue = list(todo)
        free = list(pool)
        while queue or pending:
            while queue and free:
                actor, job = free.pop(), queue.pop(0)
                attempts[job.id] = attempts.get(job.id, 0) + 1
                pending[actor.run.remote(job)] = (actor, job)
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                actor, job = pending.pop(ref)
                try:
                    row = ray.get(ref)
                except ray.exceptions.RayError as exc:  # the worker process died while running this job
                    _wait_ready(ray, actor)  # the next job goes to a worker that has its models again
                    if attempts[job.id] < MAX_ATTEMPTS:
                        queue.insert(0, job)
                        free.append(actor)
                        continue
                    row = {
                        "id": job.id,
                        "status": "failed",
                        "miou": None,
                        "seconds": None,
                        "worker": "ray",
                        "error": f"the worker died {MAX_ATTEMPTS} times running this job (out of memory or a crash?): {_cause(exc)}",
                    }
                record(row)
                free.append(actor)
    finally:
        if started_here:
            ray.shutdown()


class RayWorker(Worker):
    """The Ray actor: a Worker that also writes its pid (so a test can kill it) under OUT/_workers/."""

    def __init__(self, models: dict, out: str, threads: int | None, device: str, name: str):
        super().__init__(models, out, threads, device, f"{name}@{socket.gethostname()}:{os.getpid()}")
        folder = os.path.join(out, "_workers")
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"{os.getpid()}.pid"), "w", encoding="ascii") as f:
            f.write(str(os.getpid()))


# ---- sampled layouts ---------------------------------------------------------------------------


def sample_jobs(
    n: int, labels: list[str], seed: int, out: str, size: tuple[int, int] = (128, 128), iterations: int = 300, prompt: str = "a photo"
) -> str:
    """Draw ``n`` layouts (2-5 of ``labels`` each) with the seeded sampler; write their PNGs and the
    JOBS file next to the outputs (OUT/_sampled/); returns the JOBS path. Same seed, same files."""
    import torch

    from .imageio import save_image
    from .sampler import sample_layout

    if n < 1:
        raise TCIGInputError(f"--sample-layouts: {n}; give a number of layouts >= 1")
    labels = [x.strip() for x in labels if x.strip()]
    if len(set(labels)) < 2:
        raise TCIGInputError("--labels: give at least two different labels, e.g. sky,water,mountain")
    folder = os.path.join(out, "_sampled")
    os.makedirs(folder, exist_ok=True)
    colours = _distinct_colours(len(labels))
    lines = []
    for i in range(n):
        idx, used, kind = sample_layout(seed * 100003 + i, size, labels)
        rgb = torch.tensor([colours[labels.index(u)] for u in used], dtype=torch.float32) / 255
        save_image(rgb[idx].permute(2, 0, 1), os.path.join(folder, f"layout-{i:05d}.png"))
        classes = {"#{:02x}{:02x}{:02x}".format(*colours[labels.index(u)]): u for u in used}
        lines.append(
            {
                "id": f"sample-{i:05d}",
                "layout": f"layout-{i:05d}.png",
                "classes": classes,
                "prompt": f"{prompt}: {', '.join(used)}",
                "seed": seed + i,
                "size": list(size),
                "iterations": iterations,
                "kind": kind,
            }
        )
    path = os.path.join(folder, "jobs.jsonl")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for line in lines:
            kind = line.pop("kind")
            f.write(json.dumps(line) + "\n")
            line["kind"] = kind
    os.replace(tmp, path)
    return path


def _distinct_colours(n: int) -> list[tuple[int, int, int]]:
    import colorsys

    return [tuple(round(255 * c) for c in colorsys.hsv_to_rgb((i * 0.618034) % 1, 0.7, 0.9)) for i in range(n)]
