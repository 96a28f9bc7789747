"""GalLoP and its baselines (zero-shot CLIP, CoOp) as plain ``nn.Module``s on an open_clip ``CLIP``.

All three expose ``forward(images) -> (global [B, K, M_g], local [B, P, K, M_l] or None)`` cosines, after
``set_class_names(names)``, so one scoring path (``gallop.scores``) serves them all.

- :class:`GalLoP`: ``M_g`` global prompts on the global feature, ``M_l`` local prompts on the local features
  (``gallop.clip_local``); trainable: the two prompt learners and ``local_proj``.
- :class:`CoOp`: one learnable context on the global feature (``name_style="coop"``); at evaluation its local cosines
  use the same learned text features on the local features, for L-MCM / GL-MCM (the GL-MCM paper's "CoOp_GL").
- :class:`ZeroShotCLIP`: hand-written templates (open_clip's 80 OpenAI ImageNet templates by default), averaged
  per class; local cosines use the same class embeddings on the local features (for GL-MCM).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from gallop.clip_local import LocalFeatureVisual
from gallop.prompts import PromptedTextFeatures, PromptLearner, TextEncoder, format_class_name


def _logit_scale(clip: nn.Module) -> float:
    return float(clip.logit_scale.detach().exp())


class GalLoP(nn.Module):
    """Global and local prompts on CLIP (Lafon et al., ECCV 2024).

    Args:
        clip: an open_clip ``CLIP`` (frozen here).
        n_global / n_local: number of global / local prompts (paper: 4 / 4).
        ctx_init: init text; its token count sets ``n_ctx`` ("a photo of a" -> 4).
        n_ctx: context length when ``ctx_init`` is None.
        name_style: ``"gallop"`` (raw names) or ``"coop"`` (``_`` -> space, final ".").
        text_grad_checkpointing: recompute text-transformer activations in backward (1000 classes).
    """

    def __init__(
        self,
        clip: nn.Module,
        n_global: int = 4,
        n_local: int = 4,
        ctx_init: str | None = "a photo of a",
        n_ctx: int | None = None,
        name_style: str = "gallop",
        learn_local_proj: bool = True,
        text_grad_checkpointing: bool = True,
    ) -> None:
        super().__init__()
        self.logit_scale = _logit_scale(clip)
        encoder = TextEncoder(clip, grad_checkpointing=text_grad_checkpointing)
        self.visual = LocalFeatureVisual(clip.visual, learn_local_proj=learn_local_proj)
        self.global_text = PromptedTextFeatures(
            encoder, PromptLearner(clip.token_embedding, n_global, ctx_init, n_ctx), name_style
        )
        self.local_text = (
            PromptedTextFeatures(encoder, PromptLearner(clip.token_embedding, n_local, ctx_init, n_ctx), name_style)
            if n_local > 0
            else None
        )

    def set_class_names(self, class_names: Sequence[str]) -> None:
        self.global_text.set_class_names(class_names)
        if self.local_text is not None:
            self.local_text.set_class_names(class_names)

    def text_features(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``([K, M_g, D], [K, M_l, D] or None)``; all prompts re-encoded (gradients flow to the contexts)."""
        return self.global_text(), self.local_text() if self.local_text is not None else None

    def forward(
        self, images: torch.Tensor, text: tuple[torch.Tensor, torch.Tensor | None] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``images [B, 3, H, W]`` -> global ``[B, K, M_g]`` and local ``[B, P, K, M_l]`` cosines.

        ``text``: precomputed :meth:`text_features` (evaluation encodes them once per epoch).
        """
        tg, tl = text if text is not None else self.text_features()
        g_img, l_img = self.visual(images)
        g = torch.einsum("bd,kmd->bkm", g_img, tg.to(g_img.dtype))
        loc = torch.einsum("bpd,kmd->bpkm", l_img, tl.to(l_img.dtype)) if tl is not None else None
        return g, loc


class CoOp(GalLoP):
    """CoOp (Zhou et al., IJCV 2022): one learned context on the global feature, CoOp's class-name style.

    Training and prediction use the global cosines only. In evaluation mode :meth:`forward` also returns local
    cosines ``l[b, p, k, 1] = <f_p, t_k>``: the frozen CLIP value-path patch features (no ``local_proj``) against the
    *same* learned text features, so that L-MCM and GL-MCM (= MCM of the global cosines + L-MCM, Miyai et al. 2023)
    can be scored, as in the "CoOp (GL-MCM)" rows of GalLoP's OOD table.
    """

    predict_with_local = False

    def __init__(
        self,
        clip: nn.Module,
        ctx_init: str | None = "a photo of a",
        n_ctx: int | None = None,
        name_style: str = "coop",
        text_grad_checkpointing: bool = True,
    ) -> None:
        super().__init__(
            clip,
            n_global=1,
            n_local=0,
            ctx_init=ctx_init,
            n_ctx=n_ctx,
            name_style=name_style,
            learn_local_proj=False,
            text_grad_checkpointing=text_grad_checkpointing,
        )

    def forward(
        self, images: torch.Tensor, text: tuple[torch.Tensor, torch.Tensor | None] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Global ``[B, K, 1]`` cosines; local ``[B, P, K, 1]`` in evaluation mode only (None while training)."""
        tg = text[0] if text is not None else self.global_text()
        g_img, l_img = self.visual(images)
        g = torch.einsum("bd,kmd->bkm", g_img, tg.to(g_img.dtype))
        if self.training:
            return g, None
        return g, torch.einsum("bpd,kmd->bpkm", l_img, tg.to(l_img.dtype))


class ZeroShotCLIP(nn.Module):
    """Zero-shot CLIP with prompt ensembling; no trainable parameters.

    Predictions use the global cosines only (``predict_with_local = False``); the local cosines feed L-MCM / GL-MCM.

    ``t_k = normalize(mean_j normalize(E(template_j(name_k))))`` (``open_clip.build_zero_shot_classifier``).
    Global cosines ``[B, K, 1]``; local cosines (value-path patches, no ``local_proj``) ``[B, P, K, 1]``.
    """

    def __init__(
        self,
        clip: nn.Module,
        templates: Sequence[str | Callable[[str], str]] | None = None,
        name_style: str = "coop",
    ) -> None:
        super().__init__()
        self.predict_with_local = False
        self.clip = clip
        for p in clip.parameters():
            p.requires_grad_(False)
        self.visual = LocalFeatureVisual(clip.visual, learn_local_proj=False)
        self.templates = list(templates) if templates is not None else list(open_clip.OPENAI_IMAGENET_TEMPLATES)
        self.name_style = name_style
        self.logit_scale = _logit_scale(clip)
        self.register_buffer("classifier", torch.zeros(0), persistent=False)

    def set_class_names(self, class_names: Sequence[str]) -> None:
        """Store the names; the classifier is encoded on first use, on the device the model is on by then."""
        # "coop" style without the final "." (templates carry their own punctuation).
        self.names = [format_class_name(n, self.name_style).rstrip(".") for n in class_names]
        self.classifier = torch.zeros(0, device=self.clip.logit_scale.device)

    @torch.no_grad()
    def _encode_classifier(self) -> None:
        w = open_clip.build_zero_shot_classifier(
            self.clip,
            open_clip.tokenizer.tokenize,
            self.names,
            self.templates,
            num_classes_per_batch=10,
            device=self.clip.logit_scale.device,
        )  # [D, K]
        self.classifier = F.normalize(w.T, dim=-1)

    def text_features(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not getattr(self, "names", None):
            raise RuntimeError("call set_class_names(class_names) before encoding the zero-shot classifier")
        if self.classifier.shape[0] != len(self.names):
            self._encode_classifier()
        t = self.classifier.unsqueeze(1)  # [K, 1, D]
        return t, t

    def forward(self, images: torch.Tensor, text=None) -> tuple[torch.Tensor, torch.Tensor]:
        tg, tl = text if text is not None else self.text_features()
        g_img, l_img = self.visual(images)
        return torch.einsum("bd,kmd->bkm", g_img, tg), torch.einsum("bpd,kmd->bpkm", l_img, tl)


def count_trainable(module: nn.Module) -> int:
    """Number of trainable parameters (each shared tensor counted once)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
