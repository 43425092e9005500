"""Tiny checkpoints written through the real formats, briefly trained on a synthetic world.

``write_tiny_models(folder)`` writes:
- ``vqgan/tiny-vqgan.ckpt`` + ``tiny-vqgan.yaml``  (taming: {"state_dict": ...} + model yaml)
- ``clip/tiny-clip.safetensors`` + ``tiny-clip.json`` (open_clip model config + weights)
- ``segmenters/tiny-segformer-a``, ``tiny-segformer-b`` (SegFormer save_pretrained folders, 128 px
  native: 32x32 logits; trained on scenes drawn at 64, 128 and 256 px, small objects included)
- ``segmenters/tiny-clipseg`` (CLIPSeg save_pretrained folder with its tokenizer, trained
  with one sigmoid mask per class-name prompt)
- ``segmenters/tiny-judge-upernet`` (UperNet + ConvNeXt at 128 px, trained on its own world
  scenes: the judge, which never guides; its held-out pixel accuracy is in the manifest)
- ``manifest.json`` with ``vqgan``, ``clip``, ``segmenters``, ``guides`` (how many of the first
  segmenters steer by default), ``labels``, ``judge``

Everything is seeded and step-counted (same files on every run of the same torch); the
VQGAN learns the world as an autoencoder (~1 min on 2 cores)
and the SegFormers learn to segment it, including the VQGAN's own reconstructions, so
stage 1 can steer the tiny models to a layout. Each file stays under 2 MB.
"""

from __future__ import annotations

import json
import os

import torch
import torch.nn.functional as F

from . import world

TRAIN_SIZE = 64
CROP = 32
VQGAN_CONFIG = {
    # 64 channels at full resolution: taming's GroupNorm(32) must see >= 2 channels per group,
    # or it normalises each channel alone and the decoder cannot tell absolute colours apart.
    "model": {
        "base_learning_rate": 4.5e-6,
        "target": "taming.models.vqgan.VQModel",
        "params": {
            "embed_dim": 16,
            "n_embed": 1024,
            "ddconfig": {
                "double_z": False,
                "z_channels": 32,
                "resolution": TRAIN_SIZE,
                "in_channels": 3,
                "out_ch": 3,
                "ch": 64,
                "ch_mult": [1, 1],
                "num_res_blocks": 1,
                "attn_resolutions": [],
                "dropout": 0.0,
            },
            "lossconfig": {"target": "taming.modules.losses.vqperceptual.DummyLoss"},
        },
    }
}
CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}
MANIFEST_VERSION = 1


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(f"[tiny-models] {msg}", flush=True)


def train_vqgan(steps: int, gen: torch.Generator, quiet: bool = True):
    """Build the tiny VQGAN and train it as an autoencoder on world images for ``steps`` steps."""
    from .vqgan import VQGAN

    params = dict(VQGAN_CONFIG["model"]["params"], gumbel=False)
    model = VQGAN(params)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    codebook = model.quantize.embedding.weight
    step, quantized = 0, False
    while step < steps:
        x, _ = world.sample(4, TRAIN_SIZE, gen)
        # 32 px crops of 64 px scenes: 4x cheaper steps at the texture scale stage 1 sees
        oy, ox = torch.randint(0, TRAIN_SIZE - CROP + 1, (2,), generator=gen).tolist()
        x = x[:, :, oy : oy + CROP, ox : ox + CROP] * 2 - 1
        h = model.quant_conv(model.encoder(x))
        if not quantized and step >= int(0.65 * steps):
            # A briefly trained codebook collapses to a few codes; instead train a plain
            # autoencoder first, then seed the codebook with k-means of its latents.
            with torch.no_grad():
                codebook.copy_(_kmeans(_latents(model, gen), codebook.shape[0], gen))
            quantized = True
        if quantized:
            zq, qloss, _ = model.quantize(h)
        else:
            zq, qloss = h, h.new_zeros(())
        rec = model.decoder(model.post_quant_conv(zq))
        loss = (rec - x).abs().mean() + F.mse_loss(rec, x) + qloss
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % 50 == 0:
            _log(f"vqgan step {step} loss {loss.item():.4f} quantized {quantized}", quiet)
    return model.eval()


def _latents(model, gen: torch.Generator) -> torch.Tensor:
    """(N, E) encoder outputs of fresh world scenes."""
    with torch.no_grad():
        x, _ = world.sample(32, TRAIN_SIZE, gen)
        h = model.quant_conv(model.encoder(x * 2 - 1))
    return h.permute(0, 2, 3, 1).reshape(-1, h.shape[1])


def _kmeans(points: torch.Tensor, k: int, gen: torch.Generator, iters: int = 10) -> torch.Tensor:
    """(k, E) centroids of (N, E) points; a cluster that empties keeps its old centre."""
    centres = points[torch.randperm(len(points), generator=gen)[:k]].clone()
    for _ in range(iters):
        assign = torch.cdist(points, centres).argmin(1)
        sums = torch.zeros_like(centres).index_add_(0, assign, points)
        counts = torch.bincount(assign, minlength=k).float()[:, None]
        centres = torch.where(counts > 0, sums / counts.clamp_min(1), centres)
    return centres


def _segformer_config(seed: int):
    from transformers import SegformerConfig

    return SegformerConfig(
        num_channels=3,
        num_encoder_blocks=2,
        depths=[1, 1],
        sr_ratios=[2, 1],
        hidden_sizes=[24 + 8 * seed, 48],
        patch_sizes=[7, 3],
        strides=[4, 2],
        num_attention_heads=[1, 2],
        mlp_ratios=[2, 2],
        decoder_hidden_size=48,
        num_labels=len(world.CLASSES),
        id2label={i: c for i, c in enumerate(world.CLASSES)},
        label2id={c: i for i, c in enumerate(world.CLASSES)},
    )


def reconstruction_pool(vqgan, gen: torch.Generator, n: int = 96, size: int = TRAIN_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """World scenes as the VQGAN renders them (n, 3, S, S) with their label maps: what stage 1 shows a segmenter."""
    x, y = world.sample(n, size, gen)
    with torch.no_grad():
        rec = torch.cat([vqgan.decode(vqgan.encode(chunk)) for chunk in x.split(16)])
    return rec, y


GUIDE_SIZE = 128  # the SegFormer guides' native input: 32x32 logits, so small regions count
GUIDE_SCALES = (64, 128, 256)  # the image sizes tests and bench run at: scenes drawn at each, resized to GUIDE_SIZE


def _to_guide_size(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (bilinear, antialiased when shrinking) and label maps (nearest) at GUIDE_SIZE."""
    size = x.shape[-1]
    x = F.interpolate(x, size=(GUIDE_SIZE, GUIDE_SIZE), mode="bilinear", align_corners=False, antialias=size > GUIDE_SIZE)
    y = F.interpolate(y[:, None].float(), size=(GUIDE_SIZE, GUIDE_SIZE), mode="nearest")[:, 0].long()
    return x, y


def guide_scenes(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n world scenes at GUIDE_SIZE, each drawn at a random one of GUIDE_SCALES: alternately the world's
    Voronoi scenes and the layout sampler's kinds (objects and blobs on backgrounds, stripes, nested
    shapes, horizons) rendered in the world's textures, so the guides learn small regions too."""
    from .sampler import sample_layout

    xs, ys = [], []
    for i in range(n):
        size = GUIDE_SCALES[int(torch.randint(len(GUIDE_SCALES), (1,), generator=gen))]
        if i % 2:
            x, y = world.sample(1, size, gen)
        else:
            seed = int(torch.randint(10**6, 10**7, (1,), generator=gen))  # far from the bench's and tuning's seeds
            idx, labels, _ = sample_layout(seed, (size, size), list(world.CLASSES))
            y = torch.tensor([world.CLASSES.index(label) for label in labels])[idx][None]
            x = world.render(y[0], gen)[None]
        x, y = _to_guide_size(x, y)
        xs.append(x)
        ys.append(y)
    return torch.cat(xs), torch.cat(ys)


def train_segformer(steps: int, gen: torch.Generator, pools: list[tuple[torch.Tensor, torch.Tensor]], seed: int, quiet: bool = True):
    """A tiny SegFormer guide trained at GUIDE_SIZE on fresh scenes (``guide_scenes``) and on the
    VQGAN's reconstructions of others (``pools``, any sizes)."""
    from transformers import SegformerForSemanticSegmentation

    torch.manual_seed(seed)
    model = SegformerForSemanticSegmentation(_segformer_config(seed))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    resized = [_to_guide_size(*p) for p in pools]
    pool = torch.cat([p[0] for p in resized]), torch.cat([p[1] for p in resized])
    for step in range(steps):
        x, y = guide_scenes(6, gen)
        pick = torch.randint(len(pool[0]), (6,), generator=gen)
        x, y = torch.cat([x, pool[0][pick]]), torch.cat([y, pool[1][pick]])
        logits = model(pixel_values=(x - 0.5) / 0.5).logits
        logits = F.interpolate(logits, size=y.shape[-2:], mode="bilinear", align_corners=False)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % 50 == 0:
            _log(f"segformer{seed} step {step + 1} loss {loss.item():.4f}", quiet)
    return model.eval()


JUDGE_SIZE = 128  # the judge's native input: it sees small regions a 64 px guide cannot
JUDGE_SEED = 1_000_003  # its own samples of the world: never the guides' scenes


def _judge_config():
    """A tiny UperNet on a ConvNeXt backbone: another family than the guides (SegFormer, CLIPSeg)."""
    from transformers import ConvNextConfig, UperNetConfig

    backbone = ConvNextConfig(
        num_channels=3,
        patch_size=4,
        hidden_sizes=[24, 32, 48, 64],
        depths=[1, 1, 1, 1],
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    return UperNetConfig(
        backbone_config=backbone,
        hidden_size=32,
        pool_scales=[1, 2, 3],
        use_auxiliary_head=False,
        num_labels=len(world.CLASSES),
        id2label={i: c for i, c in enumerate(world.CLASSES)},
        label2id={c: i for i, c in enumerate(world.CLASSES)},
    )


def train_judge(steps: int, vqgan, seed: int = 0, quiet: bool = True) -> tuple[object, float]:
    """The independent judge: trained at 128 px on its own world scenes and on the VQGAN's renderings of
    others (what stage 1 shows), never used as a guide. Returns it and its pixel accuracy on held-out
    renders (clean and through the VQGAN)."""
    from transformers import UperNetForSemanticSegmentation

    gen = torch.Generator().manual_seed(seed + JUDGE_SEED)
    torch.manual_seed(seed + JUDGE_SEED)
    model = UperNetForSemanticSegmentation(_judge_config())
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    # cosine decay to a tenth: at a constant 3e-3 the last steps' noise decided the judge (held-out
    # accuracy 0.85-0.89 and oracles 0.75-0.98 on one 64 px horizon from runs that differed by float rounding)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=3e-4)
    # both scales stage 1 shows it: 128 px images, and 64 px ones enlarged (as the segmenter adapter does)
    pools = [reconstruction_pool(vqgan, gen, n=48, size=size) for size in (JUDGE_SIZE, TRAIN_SIZE)]

    def logits(x):
        x = F.interpolate(x, size=(JUDGE_SIZE, JUDGE_SIZE), mode="bilinear", align_corners=False)
        out = model(pixel_values=(x - 0.5) / 0.5).logits
        return F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)

    for step in range(steps):
        loss = 0
        for size, pool in zip((JUDGE_SIZE, TRAIN_SIZE), pools):
            x, y = world.sample(3, size, gen)
            pick = torch.randint(len(pool[0]), (2,), generator=gen)
            x, y = torch.cat([x, pool[0][pick]]), torch.cat([y, pool[1][pick]])
            y = F.interpolate(y[:, None].float(), size=(JUDGE_SIZE, JUDGE_SIZE), mode="nearest")[:, 0].long()
            loss = loss + F.cross_entropy(logits(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % 50 == 0:
            _log(f"judge step {step + 1} loss {loss.item():.4f}", quiet)
    model.eval()
    held = [world.sample(16, size, gen) for size in (JUDGE_SIZE, TRAIN_SIZE)]
    held += [reconstruction_pool(vqgan, gen, n=16, size=size) for size in (JUDGE_SIZE, TRAIN_SIZE)]
    with torch.no_grad():  # judged at its own size, each label map enlarged to it
        correct = sum(
            float((logits(x).argmax(1) == F.interpolate(y[:, None].float(), size=(JUDGE_SIZE,) * 2, mode="nearest")[:, 0]).float().mean())
            for x, y in held
        )
    return model, correct / len(held)


def _write_segformer(model, folder: str, size: int = TRAIN_SIZE) -> None:
    from transformers import SegformerImageProcessor

    model.save_pretrained(folder, safe_serialization=True)
    SegformerImageProcessor(
        do_resize=True,
        size={"height": size, "width": size},
        do_normalize=True,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        do_reduce_labels=False,
    ).save_pretrained(folder)


def _byte_vocab() -> dict[str, int]:
    """CLIP's byte-level alphabet, each symbol alone and word-final: a complete vocab with no merges."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    symbols = [chr(c) for c in cs]
    vocab = symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"]
    return {s: i for i, s in enumerate(vocab)}


def _write_clipseg(folder: str, seed: int) -> None:
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation, CLIPSegProcessor, CLIPTokenizer, ViTImageProcessor

    os.makedirs(folder, exist_ok=True)
    vocab = _byte_vocab()
    vocab_path, merges_path = os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt")
    with open(vocab_path, "w", encoding="utf-8") as f:
        json.dump(vocab, f)
    with open(merges_path, "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
    torch.manual_seed(seed)
    config = CLIPSegConfig(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 32,
            "bos_token_id": vocab["<|startoftext|>"],
            "eos_token_id": vocab["<|endoftext|>"],
            "pad_token_id": vocab["<|endoftext|>"],
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=32,
        extract_layers=[0, 1],
        reduce_dim=16,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=32,
        conditional_layer=0,
    )
    model = CLIPSegForImageSegmentation(config).eval()
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer = CLIPTokenizer(vocab_path, merges_path, model_max_length=32)
    image_processor = ViTImageProcessor(
        do_resize=True,
        size={"height": 32, "width": 32},
        do_normalize=True,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )
    CLIPSegProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)


def train_clipseg(
    folder: str, steps: int, gen: torch.Generator, pool: tuple[torch.Tensor, torch.Tensor], seed: int, quiet: bool = True
) -> None:
    """Train the tiny CLIPSeg in ``folder`` as CLIPSeg is trained: one sigmoid mask per text
    prompt (here the world's class names), on world scenes and VQGAN reconstructions. The
    text tower stays as written; the vision tower and decoder learn. Rewrites the weights."""
    from .segmenters import load_segmenter

    torch.manual_seed(seed)
    seg = load_segmenter(folder)
    model = seg.model.train().requires_grad_(True)
    # the decoder's FiLM conditioning starts nearly ignored; 1e-3 lets it wake up (measured:
    # at 3e-3 the masks collapse to the class prior), after ~300 steps, 85 % pixel accuracy at 800
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    labels = list(world.CLASSES)
    tok = seg.tokenizer(labels, padding=True, return_tensors="pt")
    for step in range(steps):
        x, y = world.sample(8, TRAIN_SIZE, gen)
        pick = torch.randint(len(pool[0]), (8,), generator=gen)
        x, y = torch.cat([x, pool[0][pick]]), torch.cat([y, pool[1][pick]])
        cond = model.clip.get_text_features(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"])
        cond = getattr(cond, "pooler_output", cond)
        xn = (F.interpolate(x, size=seg.native_size, mode="bilinear", align_corners=False) - seg.mean) / seg.std
        scores = F.interpolate(seg.logits_for(xn, cond), size=y.shape[-2:], mode="bilinear", align_corners=False)
        target = F.one_hot(y, len(labels)).permute(0, 3, 1, 2).float()
        loss = F.binary_cross_entropy_with_logits(scores, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % 50 == 0:
            _log(f"clipseg step {step + 1} loss {loss.item():.4f}", quiet)
    model.eval().requires_grad_(False)
    model.save_pretrained(folder, safe_serialization=True)


def _write_clip(folder: str, seed: int) -> str:
    import open_clip
    import safetensors.torch

    os.makedirs(folder, exist_ok=True)
    torch.manual_seed(seed)
    model = open_clip.model.CLIP(**CLIP_CONFIG)
    path = os.path.join(folder, "tiny-clip.safetensors")
    safetensors.torch.save_file({k: v.half().contiguous() for k, v in model.state_dict().items()}, path)
    with open(os.path.join(folder, "tiny-clip.json"), "w", encoding="utf-8") as f:
        json.dump(CLIP_CONFIG, f, indent=1)
    return path


def _write_vqgan(model, folder: str) -> str:
    import yaml

    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "tiny-vqgan.ckpt")
    sd = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    torch.save({"state_dict": sd, "global_step": 0}, path)
    with open(os.path.join(folder, "tiny-vqgan.yaml"), "w", encoding="utf-8") as f:
        yaml.safe_dump(VQGAN_CONFIG, f, sort_keys=False)
    return path


def cache_dir(base: str = ".cache") -> str:
    """Where the tiny models of *this* code version are cached: the name hashes the files that
    decide their content (and the torch version), so a change regenerates them."""
    import hashlib

    here = os.path.dirname(os.path.abspath(__file__))
    h = hashlib.sha1()
    for name in ("tiny.py", "world.py", "vqgan.py", "fast_decoder.py", "segmenters.py"):
        with open(os.path.join(here, name), "rb") as f:
            h.update(f.read())
    h.update(torch.__version__.encode())
    return os.path.join(base, f"tiny-models-{h.hexdigest()[:10]}")


def _train_job(kind: str, folder: str, seed: int, steps: int, data: dict, threads: int, quiet: bool) -> dict:
    """One model after the VQGAN, trained and written to ``folder``; run in a worker process or here.
    Each job has its own generator (``seed``), so the jobs can run in any order or side by side."""
    if threads:
        torch.set_num_threads(threads)
    with torch.random.fork_rng():
        gen = torch.Generator().manual_seed(seed)
        if kind == "segformer":
            _write_segformer(train_segformer(steps, gen, data["pools"], seed=data["index"], quiet=quiet), folder, GUIDE_SIZE)
        elif kind == "clipseg":
            _write_clipseg(folder, data["index"])
            train_clipseg(folder, steps, gen, data["pool"], data["index"], quiet)
        else:  # the judge: its own scenes, rendered through the VQGAN as written (fp16 weights)
            from .vqgan import load_vqgan

            judge, accuracy = train_judge(steps, load_vqgan(data["vqgan"]), data["index"], quiet)
            _write_segformer(judge, folder, JUDGE_SIZE)
            return {"judge_accuracy": accuracy}
    return {}


def _run_jobs(jobs: list[tuple], quiet: bool) -> list[dict]:
    """Run ``_train_job`` argument tuples side by side: one worker process per thread of this process,
    at most one per job, each worker on its share of the threads. The tiny models are too
    small to keep two cores busy with one model (small kernels, Python between them), so two
    models at one thread each finish sooner than one after the other at two. Spawned workers (no
    fork after OpenMP has started); with one thread, or one job, they run here."""
    budget = torch.get_num_threads()
    workers = min(len(jobs), budget)
    if workers <= 1:
        return [_train_job(*job, 0, quiet) for job in jobs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    threads = max(1, budget // workers)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_train_job, *job, threads, quiet) for job in jobs]
        return [f.result() for f in futures]


def write_tiny_models(
    folder: str,
    seed: int = 0,
    vqgan_steps: int = 500,
    seg_steps: int = 200,
    quiet: bool = False,
    judge_steps: int = 400,
    guide_steps: int = 300,
) -> dict:
    """Write every tiny model and ``manifest.json``; returns the manifest (paths absolute).
    The VQGAN first; then the guides, CLIPSeg and the judge, side by side (``_run_jobs``: spawned
    workers, so a script that calls this needs the usual ``if __name__ == "__main__":`` guard)."""
    folder = os.path.abspath(folder)
    os.makedirs(folder, exist_ok=True)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        _log(f"training the tiny VQGAN for {vqgan_steps} steps (about a minute)", quiet)
        vqgan = train_vqgan(vqgan_steps, gen, quiet)
        vqgan_path = _write_vqgan(vqgan, os.path.join(folder, "vqgan"))
        vqgan.load_state_dict({k: v.float() for k, v in torch.load(vqgan_path, weights_only=True)["state_dict"].items()})
        pool = reconstruction_pool(vqgan.requires_grad_(False), gen)
        guide_pools = [pool, reconstruction_pool(vqgan, gen, n=48, size=GUIDE_SIZE)]
    names = ["tiny-segformer-a", "tiny-segformer-b", "tiny-clipseg"]
    seg_dirs = [os.path.join(folder, "segmenters", name) for name in names]
    judge_dir = os.path.join(folder, "segmenters", "tiny-judge-upernet")
    # (kind, folder, generator seed, steps, data), longest first
    jobs = [
        ("judge", judge_dir, seed + JUDGE_SEED, judge_steps, {"vqgan": vqgan_path, "index": seed}),
        ("segformer", seg_dirs[0], seed * 100 + 11, guide_steps, {"pools": guide_pools, "index": 0}),
        ("segformer", seg_dirs[1], seed * 100 + 12, guide_steps, {"pools": guide_pools, "index": 1}),
        ("clipseg", seg_dirs[2], seed * 100 + 13, 4 * seg_steps, {"pool": pool, "index": seed}),
    ]
    _log(
        f"training {', '.join(names)} ({guide_steps}, {guide_steps}, {4 * seg_steps} steps) and the judge "
        f"(a tiny UperNet-ConvNeXt at 128 px, never a guide; {judge_steps} steps)",
        quiet,
    )
    judge_accuracy = _run_jobs(jobs, quiet)[0]["judge_accuracy"]
    _log(f"judge pixel accuracy on held-out renders: {judge_accuracy:.3f}", quiet)
    with torch.random.fork_rng():
        clip_path = _write_clip(os.path.join(folder, "clip"), seed)
    manifest = {
        "version": MANIFEST_VERSION,
        "vqgan": vqgan_path,
        "clip": clip_path,
        "segmenters": seg_dirs,
        # how many of ``segmenters`` (the first ones) steer a run by default: two guides of one family,
        # other seeds, so a pattern only one of them reads as a class costs (judged on the tuning layouts)
        "guides": 2,
        "judge": judge_dir,  # a segmenter of another family that never guides: it reports control
        "judge_accuracy": round(judge_accuracy, 4),
        "labels": list(world.CLASSES),
        "layout_colours": world.LAYOUT_HEX,
        "seed": seed,
    }
    with open(os.path.join(folder, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
    return manifest
