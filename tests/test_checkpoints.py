"""Checkpoint safety: pickled code never runs; broken files give clear messages."""

import os
import shutil

import pytest
import torch

from tcig_ops.checkpoints import load_state_dict
from tcig_ops.clip_guide import load_open_clip
from tcig_ops.errors import TCIGInputError
from tcig_ops.segmenters import load_segmenter
from tcig_ops.vqgan import load_vqgan

MARKER = "/tmp/tcig_pickle_payload_ran"


class Payload:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


def test_pickle_payload_is_refused_and_never_runs(tmp_path):
    if os.path.exists(MARKER):
        os.remove(MARKER)
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": Payload()}, path)
    with pytest.raises(TCIGInputError) as e:
        load_state_dict(str(path), "VQGAN checkpoint")
    assert "not loaded" in str(e.value) and "safetensors" in str(e.value)
    assert not os.path.exists(MARKER)


class ModelCheckpoint:
    """Stands for a Lightning callback class pickled into old taming checkpoints."""

    def __init__(self):
        self.best = 1.0


def test_lightning_metadata_objects_load_inertly(tmp_path):
    import sys
    import types

    name = "pytorch_lightning"  # not installed here; registered only while writing the file
    ModelCheckpoint.__module__ = name
    assert name not in sys.modules
    sys.modules[name] = types.SimpleNamespace(ModelCheckpoint=ModelCheckpoint)
    try:
        path = tmp_path / "old.ckpt"
        torch.save({"state_dict": {"w": torch.ones(2)}, "callbacks": {ModelCheckpoint: ModelCheckpoint()}}, path)
    finally:
        del sys.modules[name]
        ModelCheckpoint.__module__ = __name__
    sd = load_state_dict(str(path), "VQGAN checkpoint")
    assert torch.equal(sd["w"], torch.ones(2))


def test_truncated_checkpoint(tiny, tmp_path):
    data = open(tiny["vqgan"], "rb").read()
    bad = tmp_path / "tiny-vqgan.ckpt"
    bad.write_bytes(data[: len(data) // 2])
    shutil.copy(os.path.splitext(tiny["vqgan"])[0] + ".yaml", tmp_path / "tiny-vqgan.yaml")
    with pytest.raises(TCIGInputError, match="truncated"):
        load_vqgan(str(bad))


def test_vqgan_missing_yaml_and_mismatched_yaml(tiny, tmp_path):
    ck = tmp_path / "m.ckpt"
    shutil.copy(tiny["vqgan"], ck)
    with pytest.raises(TCIGInputError, match="yaml"):
        load_vqgan(str(ck))
    y = open(os.path.splitext(tiny["vqgan"])[0] + ".yaml").read().replace("n_embed: 1024", "n_embed: 512")
    (tmp_path / "m.yaml").write_text(y)
    with pytest.raises(TCIGInputError, match="does not match its yaml"):
        load_vqgan(str(ck))


def test_sd_checkpoint_given_as_vqgan(tiny, tmp_path):
    import safetensors.torch

    p = tmp_path / "sd15.safetensors"
    safetensors.torch.save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1)}, str(p))
    shutil.copy(os.path.splitext(tiny["vqgan"])[0] + ".yaml", tmp_path / "sd15.yaml")
    with pytest.raises(TCIGInputError, match="not a taming VQGAN"):
        load_vqgan(str(p))


def test_clip_weights_not_matching_config(tiny, tmp_path):
    import safetensors.torch

    p = tmp_path / "x.safetensors"
    safetensors.torch.save_file({"visual.proj": torch.zeros(3, 3)}, str(p))
    shutil.copy(os.path.splitext(tiny["clip"])[0] + ".json", tmp_path / "x.json")
    with pytest.raises(TCIGInputError, match="do not fit"):
        load_open_clip(str(p))


def test_transformers_folder_of_non_segmentation_model(tmp_path):
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8, vocab_size=20)).save_pretrained(
        tmp_path
    )
    with pytest.raises(TCIGInputError, match="not a segmentation model"):
        load_segmenter(str(tmp_path))
