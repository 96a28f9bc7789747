"""Time one GalLoP training step (forward + backward) with the value path in the last block only (ours) vs in every
block of both towers (the original code's cost), in the same run, and print the ratio.

    python benchmarks/bench_gallop_step.py [--batch 32 --classes 100 --model ViT-B-16 --steps 2 --threads 2]

Random-init open_clip ViT-B/16 (no weights needed), CPU by default, with text-encoder gradient checkpointing (as GalLoP
for many classes; without it the 800 prompt sequences would keep an estimated ~30 GB of activations). The peer wraps every ``ResidualAttentionBlock``
of the image and text transformers so that it also computes the block's value path (as the vendored CLIP of the
original does) and reads the local features from the last image block's stored value path. Both variants give the
same loss (checked before timing).
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import contextmanager

import torch
from open_clip.transformer import ResidualAttentionBlock

import gallop.clip_local as cl
from common.backbones.clip import build_clip
from gallop.global_local_loss import gallop_loss
from gallop.model import GalLoP

_value_path = cl.block_value_path


@contextmanager
def value_path_in_every_block(model: torch.nn.Module):
    """Patch every block of ``model`` to compute its value path too, as the original's blocks return ``[x, v]``.

    Like the original, only the latest block's ``v`` is kept alive (each block's ``v`` replaces the previous one);
    the local features then read the last image block's ``v`` (the image tower runs after the text tower).
    """
    blocks = [m for m in model.modules() if isinstance(m, ResidualAttentionBlock)]
    originals = [b.forward for b in blocks]
    latest: dict[str, torch.Tensor] = {}

    def make(block, fwd):
        def forward(q_x, k_x=None, v_x=None, attn_mask=None):
            latest["v"] = _value_path(block, q_x)
            return fwd(q_x, k_x, v_x, attn_mask=attn_mask)

        return forward

    for b, f in zip(blocks, originals):
        b.forward = make(b, f)
    cl.block_value_path = lambda block, x: latest["v"][:, 1:]  # patches of the last image block's value path
    try:
        yield
    finally:
        cl.block_value_path = _value_path
        latest.clear()
        for b in blocks:
            del b.forward  # back to the class's forward


def step(model: GalLoP, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.zero_grad(set_to_none=True)
    g, loc = model(images)
    loss = gallop_loss(g, loc, labels, model.logit_scale, dropout=0.75, generator=torch.Generator().manual_seed(0))
    loss["loss"].backward()
    return float(loss["loss"].detach())


def timed(model, images, labels) -> float:
    t = time.perf_counter()
    step(model, images, labels)
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="ViT-B-16")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--no-text-checkpointing",
        action="store_true",
        help="keep every text activation (estimated ~30 GB for 100 classes x 8 prompts)",
    )
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    clip, pre = build_clip(a.model, pretrained=None, seed=0, device=a.device)
    model = GalLoP(clip, text_grad_checkpointing=not a.no_text_checkpointing).to(a.device)
    model.set_class_names([f"class {i}" for i in range(a.classes)])
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(a.batch, 3, pre.image_size, pre.image_size, generator=gen).to(a.device)
    labels = torch.randint(0, a.classes, (a.batch,), generator=gen).to(a.device)

    t = time.perf_counter()
    ours_loss = step(model, images, labels)  # also the warm-up of both
    print(f"warm-up ours {time.perf_counter() - t:.1f} s", flush=True)
    t = time.perf_counter()
    with value_path_in_every_block(model):
        peer_loss = step(model, images, labels)
    print(f"warm-up peer {time.perf_counter() - t:.1f} s", flush=True)
    assert abs(ours_loss - peer_loss) < 1e-3 * max(1.0, abs(ours_loss)), (ours_loss, peer_loss)

    # interleave to spread machine-load noise over both
    ours, peer = [], []
    for _ in range(a.steps):
        ours.append(timed(model, images, labels))
        with value_path_in_every_block(model):
            peer.append(timed(model, images, labels))
        print(f"step: ours {ours[-1]:.1f} s, peer {peer[-1]:.1f} s", flush=True)
    mo, mp = statistics.median(ours), statistics.median(peer)
    print(
        f"model {a.model} (random init), batch {a.batch}, {a.classes} classes x (4 global + 4 local prompts), "
        f"device {a.device}, {a.threads} threads, text grad checkpointing {not a.no_text_checkpointing}, "
        f"{a.steps} timed steps each (after a warm-up)"
    )
    print(f"ours  (value path in the last block only):       median {mo:.2f} s/step  {[f'{t:.2f}' for t in ours]}")
    print(f"peer  (value path in every block, both towers):  median {mp:.2f} s/step  {[f'{t:.2f}' for t in peer]}")
    print(f"speed-up peer/ours = {mp / mo:.2f}x   (loss ours {ours_loss:.4f}, peer {peer_loss:.4f})")


if __name__ == "__main__":
    main()
