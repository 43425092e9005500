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
from e2e.file_server import CLIP_REPO, SEG_REPO, Files, point_vqgan_at, tiny_model_files
from tcig_ops import fetch
from tcig_ops.errors import TCIGInputError
from tcig_ops.fetch import download_url, fetch_into, fetch_models, is_present


@pytest.fixture()
def server(tiny, monkeypatch):
    """The loopback hub: HF_ENDPOINT points huggingface_hub at it, and the known VQGAN's direct URLs
    (data in a copy of the table) at its plain files."""
    import copy

    srv = Files(tiny_model_files(tiny))
    monkeypatch.setenv("HF_ENDPOINT", srv.url)
    monkeypatch.setattr(fetch, "KNOWN_MODELS", copy.deepcopy(fetch.KNOWN_MODELS))
    point_vqgan_at(srv, fetch.KNOWN_MODELS)
    yield srv
    srv.shutdown()


def test_download_resumes_after_a_cut_and_verifies(server, tmp_path):
    data = b"x" * 5_000_000
    server.files["/big"] = data
    dest = str(tmp_path / "big.dat")
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
    dest = str(tmp_path / "f.dat")
    with open(dest + ".part", "wb") as f:
        f.write(data[:1000])
    server.mode = "norange"
    download_url(server.url + "/f", dest, "f", size=len(data))
    assert open(dest, "rb").read() == data


def test_wrong_bytes_are_refused_and_removed(server, tmp_path):
    data = os.urandom(10_000)
    server.files["/w"] = data
    server.mode = "wrong"
    dest = str(tmp_path / "w.dat")
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
    dest = str(tmp_path / "c.dat")
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


def test_downloads_off_uses_what_is_there_and_refuses_only_what_is_missing(server, tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("TCIG_NO_DOWNLOAD", "1")
    with pytest.raises(TCIGInputError, match="turned off.*README"):
        download_url(server.url + "/vqgan/model.yaml", str(tmp_path / "y.yaml"), "v")
    folder = tmp_path / "vqgan"
    with pytest.raises(TCIGInputError, match="turned off.*not there.*by hand"):
        fetch_into("vqgan_imagenet_f16_16384", str(folder))
    folder.mkdir()  # the user places the files by hand, as the README says
    (folder / "vqgan_imagenet_f16_16384.ckpt").write_bytes(open(tiny["vqgan"], "rb").read())
    (folder / "vqgan_imagenet_f16_16384.yaml").write_bytes(open(os.path.splitext(tiny["vqgan"])[0] + ".yaml", "rb").read())
    assert fetch_into("vqgan_imagenet_f16_16384", str(folder)) == str(folder / "vqgan_imagenet_f16_16384.ckpt")
    with pytest.raises(TCIGInputError, match="turned off"):
        fetch_into("segformer-b0-finetuned-ade-512-512", str(tmp_path / "segmenters"))
    assert server.gets == []


def test_an_html_error_page_is_not_a_checkpoint(server, tmp_path):
    server.files["/vqgan/last.ckpt"] = b"<!DOCTYPE html><html><body>Too many requests</body></html>"
    folder = tmp_path / "vqgan"
    with pytest.raises(TCIGInputError, match="not a checkpoint.*removed"):
        fetch_into("vqgan_imagenet_f16_16384", str(folder))
    assert not is_present("vqgan_imagenet_f16_16384", str(tmp_path)) and not any(p.suffix == ".ckpt" for p in folder.iterdir())
    server.files["/vqgan/model.yaml"] = b"<html>oops</html>"
    with pytest.raises(TCIGInputError, match="not a model config"):
        download_url(server.url + "/vqgan/model.yaml", str(tmp_path / "m.yaml"), "m")
    server.files["/s"] = b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!"
    with pytest.raises(TCIGInputError, match="not a safetensors file"):
        download_url(server.url + "/s", str(tmp_path / "w.safetensors"), "m")


def test_a_cut_segmenter_download_is_never_taken_as_installed(server, tmp_path):
    root = tmp_path / "segmenters"
    server.mode = "cut"  # every file arrives half: config.json too, so nothing is whole
    with pytest.raises(TCIGInputError, match="cut"):
        fetch_into("segformer-b0-finetuned-ade-512-512", str(root))
    assert not is_present("segformer-b0-finetuned-ade-512-512", str(tmp_path))
    assert not (root / "segformer-b0-finetuned-ade-512-512").exists()  # only the .partial folder next to it
    server.mode = "range"
    folder = fetch_into("segformer-b0-finetuned-ade-512-512", str(root))
    assert (
        is_present("segformer-b0-finetuned-ade-512-512", str(tmp_path))
        and not (root / "segformer-b0-finetuned-ade-512-512.partial").exists()
    )
    assert sorted(os.listdir(folder)) == sorted(n for n in server.repo_files(SEG_REPO) if n != "README.md")
    resumed = [r for p, r in server.gets if "/resolve/" in p and r]
    assert resumed, server.gets  # the cut file resumed where it stopped


def test_an_older_half_folder_is_replaced_not_loaded(server, tmp_path):
    half = tmp_path / "segmenters" / "segformer-b0-finetuned-ade-512-512"
    half.mkdir(parents=True)
    (half / "config.json").write_text("{}")  # what an older version left after a cut: config, no weights
    assert not is_present("segformer-b0-finetuned-ade-512-512", str(tmp_path))
    fetch_into("segformer-b0-finetuned-ade-512-512", str(tmp_path / "segmenters"))
    from tcig_ops.segmenters import load_segmenter

    assert load_segmenter(str(half)).labels[0] == "sky"


@pytest.mark.parametrize("name", ["../../../x.json", "/etc/x.json", "a/../../x.json", "..\\x.json", "C:x.json"])
def test_file_names_from_the_listing_stay_inside_the_folder(server, tmp_path, name):
    server.listed_extra[SEG_REPO] = [name]
    server.files[f"/{SEG_REPO}/resolve/main/{name}"] = b"{}"
    root = tmp_path / "a" / "b" / "segmenters"
    with pytest.raises(TCIGInputError, match="refused"):
        fetch_into("segformer-b0-finetuned-ade-512-512", str(root))
    assert not any(p.name == "x.json" for p in tmp_path.rglob("*"))
    assert not [p for p, _ in server.gets if "/resolve/" in p]  # refused before any file was fetched


def test_fetch_models_first_run_loads_and_second_run_fetches_nothing(server, tiny, tmp_path, monkeypatch):
    from tcig_ops.runner import load_models, manifest_models

    root = str(tmp_path / "models")
    names = ["vqgan_imagenet_f16_16384", "open_clip_vit_b32", "segformer-b0-finetuned-ade-512-512"]
    m = fetch_models(names, root)
    assert m["vqgan"] == "vqgan/vqgan_imagenet_f16_16384.ckpt" and m["clip_arch"] == "ViT-B-32"
    assert m["guides"] == 1 and "judge" not in m  # one segmenter: it guides, nothing judges
    assert all(is_present(n, root) for n in names)
    paths = manifest_models(root)
    assert os.path.isfile(os.path.splitext(paths["clip"])[0] + ".json")  # its config beside it (the repo's open_clip_config.json)
    models = load_models(paths["vqgan"], paths["clip"], paths["segmenters"], clip_arch=None)
    assert models.vqgan.factor == 2 and models.segmenters[0].labels[0] == "sky"
    before = len(server.gets)
    fetch_models(names, root)
    assert len(server.gets) == before  # present files are not fetched again


def test_a_fetched_set_with_several_segmenters_keeps_the_last_one_as_its_judge():
    from tcig_ops.fetch import models_manifest
    from tcig_ops.runner import guide_count

    names = ["segformer-b0-finetuned-ade-512-512", "segformer-b2-finetuned-ade-512-512", "clipseg-rd64-refined"]
    m = models_manifest({n: f"segmenters/{n}" for n in names})
    assert m["segmenters"] == ["segmenters/segformer-b0-finetuned-ade-512-512", "segmenters/segformer-b2-finetuned-ade-512-512"]
    assert m["judge"] == "segmenters/clipseg-rd64-refined" and m["judge"] not in m["segmenters"]
    assert guide_count(m) == 2


def test_fetch_models_cli_writes_a_manifest(server, tmp_path):
    root = tmp_path / "m"

    def fetch_cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "tcig_ops", "fetch-models", *args, "--dir", str(root)],
            cwd=ROOT,
            env=dict(os.environ, HF_ENDPOINT=server.url),
            capture_output=True,
            text=True,
            timeout=120,
        )

    r = fetch_cli("open_clip_vit_b32")
    assert r.returncode == 0, r.stderr
    assert json.loads((root / "manifest.json").read_text())["clip"] == "tcig_clip/open_clip_vit_b32.bin"
    assert f"/{CLIP_REPO}/resolve/main/open_clip_pytorch_model.bin" in {p for p, _ in server.gets}  # through HF_ENDPOINT
    r = fetch_cli("nonsense")
    assert r.returncode == 2 and "not a known model" in r.stderr
    r = fetch_cli("--list")
    assert "open_clip_vit_b32" in r.stdout and "present" in r.stdout
