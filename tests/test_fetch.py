"""First-run downloads against a loopback HTTP server the test starts (never the internet):
first download and load, resume after a cut, servers without Range, wrong bytes, concurrent
requests, downloads turned off, the CLI's manifest."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading

import pytest

from conftest import ROOT
from e2e.file_server import Files, tiny_model_files
from tcig_ops.errors import TCIGInputError
from tcig_ops.fetch import download_url, fetch_models, is_present


@pytest.fixture()
def server(tiny):
    srv = Files(tiny_model_files(tiny))
    yield srv
    srv.shutdown()


def test_download_resumes_after_a_cut_and_verifies(server, tmp_path):
    data = b"x" * 5_000_000
    server.files["/big"] = data
    dest = str(tmp_path / "big.bin")
    server.mode = "cut"
    with pytest.raises(TCIGInputError, match=r"big.*the transfer was cut.*URL http://127\.0\.0\.1.*folder .*README"):
        download_url(server.url + "/big", dest, "big", size=len(data))
    part = os.path.getsize(dest + ".part")
    assert 0 < part < len(data) and not os.path.exists(dest)  # the partial file is kept for resume
    server.mode = "range"
    download_url(server.url + "/big", dest, "big", size=len(data), sha256=hashlib.sha256(data).hexdigest())
    assert open(dest, "rb").read() == data and not os.path.exists(dest + ".part")
    assert server.gets[-1][1] == f"bytes={part}-"  # resumed where it stopped


def test_server_without_range_starts_again(server, tmp_path):
    data = os.urandom(300_000)
    server.files["/f"] = data
    dest = str(tmp_path / "f.bin")
    with open(dest + ".part", "wb") as f:
        f.write(data[:1000])
    server.mode = "norange"
    download_url(server.url + "/f", dest, "f", size=len(data))
    assert open(dest, "rb").read() == data


def test_wrong_bytes_are_refused_and_removed(server, tmp_path):
    data = os.urandom(10_000)
    server.files["/w"] = data
    server.mode = "wrong"
    dest = str(tmp_path / "w.bin")
    with pytest.raises(TCIGInputError, match="checksum mismatch"):
        download_url(server.url + "/w", dest, "w", sha256=hashlib.sha256(data).hexdigest())
    assert not os.path.exists(dest) and not os.path.exists(dest + ".part")


def test_404_and_offline_name_model_url_and_folder(server, tmp_path):
    with pytest.raises(TCIGInputError, match=r"download of m failed: HTTP 404.*URL .*/nope.*folder"):
        download_url(server.url + "/nope", str(tmp_path / "x"), "m")
    with pytest.raises(TCIGInputError, match="offline"):
        download_url("http://127.0.0.1:9/none", str(tmp_path / "y"), "m", timeout=5)


def test_concurrent_requests_download_once(server, tmp_path):
    data = os.urandom(2_000_000)
    server.files["/c"] = data
    dest = str(tmp_path / "c.bin")
    errors = []

    def get():
        try:
            download_url(server.url + "/c", dest, "c", size=len(data))
        except Exception as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=get) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and open(dest, "rb").read() == data
    assert [p for p, _ in server.gets].count("/c") == 1


def test_downloads_off(server, tmp_path, monkeypatch):
    monkeypatch.setenv("TCIG_NO_DOWNLOAD", "1")
    with pytest.raises(TCIGInputError, match="turned off"):
        download_url(server.url + "/vqgan_imagenet_f16_16384/vqgan_imagenet_f16_16384.yaml", str(tmp_path / "y.yaml"), "v")
    assert server.gets == []


def test_fetch_models_first_run_loads_and_second_run_fetches_nothing(server, tiny, tmp_path, monkeypatch):
    from tcig_ops.runner import load_models, manifest_models

    monkeypatch.setenv("TCIG_MODEL_BASE_URL", server.url)
    root = str(tmp_path / "models")
    names = ["vqgan_imagenet_f16_16384", "open_clip_vit_b32", "segformer-b0-finetuned-ade-512-512"]
    m = fetch_models(names, root)
    assert m["vqgan"] == "vqgan/vqgan_imagenet_f16_16384.ckpt" and m["clip_arch"] == "ViT-B-32"
    assert all(is_present(n, root) for n in names)
    paths = manifest_models(root)
    assert os.path.isfile(os.path.splitext(paths["clip"])[0] + ".json")  # its config beside it (here the server's tiny one)
    models = load_models(paths["vqgan"], paths["clip"], paths["segmenters"], clip_arch=None)
    assert models.vqgan.factor == 2 and models.segmenters[0].labels[0] == "sky"
    before = len(server.gets)
    fetch_models(names, root)
    assert len(server.gets) == before  # present files are not fetched again


def test_fetch_models_cli_writes_a_manifest(server, tmp_path):
    root = tmp_path / "m"

    def fetch_cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "tcig_ops", "fetch-models", *args, "--dir", str(root)],
            cwd=ROOT,
            env=dict(os.environ, TCIG_MODEL_BASE_URL=server.url),
            capture_output=True,
            text=True,
            timeout=120,
        )

    r = fetch_cli("vqgan_imagenet_f16_16384")
    assert r.returncode == 0, r.stderr
    assert json.loads((root / "manifest.json").read_text())["vqgan"] == "vqgan/vqgan_imagenet_f16_16384.ckpt"
    r = fetch_cli("nonsense")
    assert r.returncode == 2 and "not a known model" in r.stderr
    r = fetch_cli("--list")
    assert "vqgan_imagenet_f16_16384" in r.stdout and "present" in r.stdout
