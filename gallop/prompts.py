"""CoOp-style learnable text contexts for CLIP, with several prompts encoded at once.

A prompt ``m`` for class ``k`` is the token sequence ``[SOT][ctx_m,1 .. ctx_m,n][name_k tokens][EOT][pad]``
(77 tokens), where the ``n`` context vectors are free parameters in the token-embedding space (CoOp, Zhou et al.
2022; docs/methods/gallop.md#formulas). The text feature is CLIP's text transformer read at EOT, projected and
L2-normalised:
``t_{k,m} = normalize(ln_final(T(e))[EOT] @ text_projection)``.

Class-name handling (``name_style``): ``"gallop"`` tokenises the raw name (``_`` kept, no final ".");
``"coop"`` replaces ``_`` by a space and appends ``"."`` (CoOp's ``classname.replace("_", " ") + "."``).

All ``K x M`` sequences are encoded each step; with ``grad_checkpointing`` the text transformer recomputes block
activations in the backward pass, so 1000 classes x 8 prompts fit in memory.
"""

from __future__ import annotations

from collections.abc import Sequence

import open_clip
import torch
import torch.nn.functional as F
from open_clip.transformer import text_global_pool
from torch import nn
from torch.utils.checkpoint import checkpoint

NAME_STYLES = ("gallop", "coop")


def format_class_name(name: str, style: str) -> str:
    """``"gallop"``: the name as is; ``"coop"``: ``_`` -> space, plus a final ``"."``."""
    if style == "gallop":
        return name
    if style == "coop":
        return name.replace("_", " ") + "."
    raise ValueError(f"name_style must be one of {NAME_STYLES}, got {style!r}")


def build_prompt_tokens(
    class_names: Sequence[str], n_ctx: int, ctx_ids: Sequence[int], name_style: str, context_length: int = 77
) -> torch.Tensor:
    """Token ids ``[K, L]``: ``[SOT] ctx_ids [name] [EOT] 0...``; the ``n_ctx`` context slots hold ``ctx_ids``.

    The context slots are overwritten by learned vectors; filling them with the init text's ids makes the
    sequence identical to the tokenised text ``"<init text> <name>"``. Names that do not fit are truncated, keeping EOT.
    """
    tok = open_clip.tokenizer._tokenizer
    sot, eot = tok.encoder["<start_of_text>"], tok.encoder["<end_of_text>"]
    if len(ctx_ids) != n_ctx:
        raise ValueError(f"{len(ctx_ids)} context ids for n_ctx={n_ctx}")
    out = torch.zeros(len(class_names), context_length, dtype=torch.long)
    for k, name in enumerate(class_names):
        body = tok.encode(format_class_name(name, name_style))
        ids = [sot, *ctx_ids, *body][: context_length - 1] + [eot]
        out[k, : len(ids)] = torch.tensor(ids)
    return out


class TextEncoder(nn.Module):
    """The frozen CLIP text tower, taking token embeddings instead of ids (so contexts can be learned).

    Holds references to the modules of an open_clip ``CLIP`` (not copies); they are frozen here.
    """

    def __init__(self, clip: nn.Module, grad_checkpointing: bool = False) -> None:
        super().__init__()
        self.token_embedding = clip.token_embedding
        self.positional_embedding = clip.positional_embedding
        self.transformer = clip.transformer
        self.ln_final = clip.ln_final
        self.text_projection = clip.text_projection
        self.register_buffer("attn_mask", clip.attn_mask, persistent=False)
        self.pool_type = clip.text_pool_type
        self.grad_checkpointing = grad_checkpointing
        for p in self.parameters():
            p.requires_grad_(False)

    @property
    def width(self) -> int:
        return self.token_embedding.weight.shape[1]

    def forward(self, embeddings: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
        """``embeddings [S, L, W]`` (token embeddings), ``token_ids [S, L]`` (for the EOT position) -> ``[S, D]``."""
        dtype = self.transformer.get_cast_dtype()
        x = embeddings.to(dtype) + self.positional_embedding.to(dtype)
        for blk in self.transformer.resblocks:
            if self.grad_checkpointing and torch.is_grad_enabled() and x.requires_grad:
                x = checkpoint(blk, x, None, None, self.attn_mask, use_reentrant=False)
            else:
                x = blk(x, attn_mask=self.attn_mask)
        x = self.ln_final(x)
        x = text_global_pool(x, token_ids, self.pool_type)
        proj = self.text_projection
        x = proj(x) if isinstance(proj, nn.Linear) else x @ proj
        return F.normalize(x, dim=-1)


class PromptLearner(nn.Module):
    """``M`` learnable contexts of ``n_ctx`` tokens each, shared by all classes (CoOp's unified context).

    Args:
        width: token-embedding width of the text tower.
        n_prompts: ``M``.
        ctx_init: init text (``"a photo of a"``); ``n_ctx`` is then its token count and every prompt starts at its
            token embeddings. ``None``: ``n_ctx`` random N(0, 0.02^2) vectors per prompt (CoOp's generic init).
        n_ctx: context length when ``ctx_init`` is None (if given with ``ctx_init``, it must match).
        token_embedding: the CLIP token embedding (to embed ``ctx_init``).
    """

    def __init__(
        self,
        token_embedding: nn.Embedding,
        n_prompts: int = 1,
        ctx_init: str | None = "a photo of a",
        n_ctx: int | None = None,
    ) -> None:
        super().__init__()
        if n_prompts < 1:
            raise ValueError(f"n_prompts must be >= 1, got {n_prompts}")
        width = token_embedding.weight.shape[1]
        if ctx_init:
            ids = open_clip.tokenizer._tokenizer.encode(ctx_init)
            if n_ctx is not None and n_ctx != len(ids):
                raise ValueError(f"ctx_init {ctx_init!r} has {len(ids)} tokens but n_ctx={n_ctx}")
            with torch.no_grad():
                init = token_embedding.weight[torch.tensor(ids)].detach().clone().float()  # [n_ctx, W]
            ctx = init.unsqueeze(0).repeat(n_prompts, 1, 1)
        else:
            if not n_ctx:
                raise ValueError("give ctx_init or n_ctx")
            ids = [open_clip.tokenizer._tokenizer.encode("X")[0]] * n_ctx
            ctx = torch.randn(n_prompts, n_ctx, width) * 0.02
        self.ctx_ids = list(ids)
        self.n_ctx = len(ids)
        self.ctx = nn.Parameter(ctx)  # [M, n_ctx, W]

    @property
    def n_prompts(self) -> int:
        return self.ctx.shape[0]

    def embed(self, token_embedding: nn.Embedding, token_ids: torch.Tensor) -> torch.Tensor:
        """``token_ids [K, L]`` -> prompted embeddings ``[M, K, L, W]`` (context slots 1..n_ctx replaced)."""
        base = token_embedding(token_ids)  # [K, L, W]
        m, k = self.n_prompts, token_ids.shape[0]
        prefix = base[:, :1].unsqueeze(0).expand(m, k, -1, -1)
        suffix = base[:, 1 + self.n_ctx :].unsqueeze(0).expand(m, k, -1, -1)
        ctx = self.ctx.to(base.dtype).unsqueeze(1).expand(m, k, -1, -1)
        return torch.cat([prefix, ctx, suffix], dim=2)


class PromptedTextFeatures(nn.Module):
    """Text features ``[K, M, D]`` for all classes and all prompts of a :class:`PromptLearner`."""

    def __init__(self, encoder: TextEncoder, learner: PromptLearner, name_style: str = "gallop") -> None:
        super().__init__()
        self.encoder = encoder
        self.learner = learner
        self.name_style = name_style
        self.register_buffer("token_ids", torch.zeros(0, 77, dtype=torch.long), persistent=False)

    def set_class_names(self, class_names: Sequence[str]) -> None:
        ids = build_prompt_tokens(
            class_names, self.learner.n_ctx, self.learner.ctx_ids, self.name_style, self.encoder.attn_mask.shape[0]
        )
        self.token_ids = ids.to(self.encoder.token_embedding.weight.device)

    def forward(self) -> torch.Tensor:
        if self.token_ids.shape[0] == 0:
            raise RuntimeError("call set_class_names(class_names) before encoding prompts")
        emb = self.learner.embed(self.encoder.token_embedding, self.token_ids)  # [M, K, L, W]
        m, k, length, w = emb.shape
        ids = self.token_ids.unsqueeze(0).expand(m, -1, -1).reshape(m * k, length)
        feats = self.encoder(emb.reshape(m * k, length, w), ids)  # [M*K, D]
        return feats.view(m, k, -1).transpose(0, 1)  # [K, M, D]
