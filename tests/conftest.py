"""Shared fixtures: the tiny trained models, written once per source version and cached."""

from __future__ import annotations

import json
import pathlib

import pytest
import torch
from hypothesis import settings

# property tests must not fail on a busy 2-core CI machine because one example was slow
settings.register_profile("tcig", deadline=None, max_examples=50)
settings.load_profile("tcig")

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _tiny_dir() -> pathlib.Path:
    """The tiny models of this code version, or ``TCIG_TINY_MODELS`` (a folder with manifest.json:
    e.g. models trained on another CPU, to check that the tests hold on them too)."""
    import os

    if os.environ.get("TCIG_TINY_MODELS"):
        return pathlib.Path(os.environ["TCIG_TINY_MODELS"]).resolve()
    from tcig_ops.tiny import cache_dir

    return pathlib.Path(cache_dir(str(ROOT / ".cache")))


@pytest.fixture(scope="session")
def tiny() -> dict:
    """Manifest of the tiny models (absolute paths), written on first use (~2 min on 2 cores)."""
    folder = _tiny_dir()
    if not (folder / "manifest.json").is_file():
        from tcig_ops.tiny import write_tiny_models

        write_tiny_models(str(folder), quiet=True)
    with open(folder / "manifest.json", encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="session")
def models(tiny):
    from tcig_ops.clip_guide import load_open_clip
    from tcig_ops.segmenters import load_segmenter
    from tcig_ops.vqgan import load_vqgan

    return {
        "vqgan": load_vqgan(tiny["vqgan"]),
        "clip": load_open_clip(tiny["clip"]),
        "seg_a": load_segmenter(tiny["segmenters"][0]),
        "seg_b": load_segmenter(tiny["segmenters"][1]),
        "judge": load_segmenter(tiny["judge"]),  # never guides anywhere
    }


def region_layout(kind: str, size: int = 64):
    """Simple 2-3 region layouts used across tests."""
    from tcig_ops.layout import layout_from_masks

    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    if kind == "lake":  # sky / mountain / water, wavy ridge
        sky = (yy < 0.4 + 0.1 * torch.sin(xx * 6)).float()
        return layout_from_masks([(torch.ones(size, size), "mountain"), (sky, "sky"), ((yy > 0.7).float(), "water")])
    if kind == "road":  # grass | road
        return layout_from_masks([(torch.ones(size, size), "grass"), ((xx < 0.5).float(), "road")])
    if kind == "beach":  # sand, sky, a round tree
        sky = (yy < 0.4 + 0.1 * torch.sin(xx * 6)).float()
        tree = (((xx - 0.5) ** 2 + (yy - 0.7) ** 2) < 0.05).float()
        return layout_from_masks([(torch.ones(size, size), "sand"), (sky, "sky"), (tree, "tree")])
    raise ValueError(kind)


@pytest.fixture(scope="session")
def server(tiny, tmp_path_factory):
    """A real ComfyUI on loopback with this pack and the tiny models (the e2e and browser tests share it)."""
    from e2e.comfy_server import SKIP_REASON, ComfyServer, find_comfyui, prepare_base, tiny_controlnet, tiny_sd_checkpoint

    comfy = find_comfyui()
    if comfy is None:
        pytest.skip(SKIP_REASON)
    sd = tiny_sd_checkpoint(comfy, str(ROOT / ".cache" / "e2e"))
    cn = tiny_controlnet(comfy, str(ROOT / ".cache" / "e2e"))
    base = tmp_path_factory.mktemp("comfy_base")
    yaml_path = prepare_base(str(base), str(tmp_path_factory.mktemp("extra_models")), tiny, sd, cn)
    from e2e.file_server import Files, tiny_model_files

    hub = Files(tiny_model_files(tiny))  # stands in for the Hugging Face Hub: known models download from loopback
    srv = ComfyServer(comfy, str(base), yaml_path, str(base / "server.log"), env={"HF_ENDPOINT": hub.url})
    srv.hub = hub
    yield srv
    srv.stop()
    hub.shutdown()
