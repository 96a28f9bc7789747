"""Retrieval grids: a few fixed queries, each followed by its top-k, every image framed by its relevance level.

- :func:`retrieval_topk`: exact top-k (cosine, query left out of its own gallery) and the number of shared
  hierarchy levels of each retrieved item (0 = irrelevant ... L = same finest class).
- :func:`draw_retrieval_grid`: the picture (matplotlib, Agg). Rows can come from several models (same queries),
  e.g. ``row_titles=["HAPPIER q0", "ROADMAP q0", ...]``.
- :func:`raw_image`: the displayable image of a dataset item (before normalisation when the dataset allows).
- :class:`RetrievalGridCallback`: at the end of ``test``, embeds the test set, draws the grid for fixed query
  indices, saves ``retrieval_grid.png`` (+ ``retrieval_grid.json`` with the indices and levels) in the run folder,
  and logs the image to wandb when a ``WandbLogger`` is attached.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

log = logging.getLogger(__name__)


def level_colors(num_levels: int) -> list[tuple[float, float, float]]:
    """Border colour per number of shared levels 0..L: red (irrelevant) through orange to green (same class)."""
    if num_levels < 1:
        raise ValueError(f"num_levels must be >= 1, got {num_levels}")
    red, orange, green = np.array([0.85, 0.1, 0.1]), np.array([1.0, 0.6, 0.0]), np.array([0.1, 0.7, 0.2])
    out = [tuple(red)]
    for t in range(1, num_levels + 1):
        a = (t - 1) / max(num_levels - 1, 1)  # 0 at level 1, 1 at level L
        c = green if num_levels == 1 else (1 - a) * orange + a * green
        out.append(tuple(float(v) for v in c))
    return out


@torch.no_grad()
def retrieval_topk(
    embeddings: Tensor, labels: Tensor, query_idx: Sequence[int], k: int = 8, exclude_self: bool = True
) -> tuple[Tensor, Tensor]:
    """``(topk [Q, k] gallery indices, levels [Q, k] shared levels)`` for the given queries (whole set = gallery)."""
    from common.metrics.relevance import shared_levels

    emb = F.normalize(embeddings.float(), dim=1)
    q = torch.as_tensor(list(query_idx), dtype=torch.long)
    if q.numel() == 0:
        raise ValueError("query_idx is empty; give at least one query index")
    if int(q.max()) >= len(emb) or int(q.min()) < 0:
        raise ValueError(f"query indices must lie in 0..{len(emb) - 1}, got {q.tolist()}")
    scores = emb[q] @ emb.T  # [Q, N]
    if exclude_self:
        scores[torch.arange(len(q)), q] = -float("inf")
    k = min(k, emb.shape[0] - int(exclude_self))
    top = scores.topk(k, dim=1).indices  # [Q, k]
    lv = shared_levels(labels[q], labels)  # [Q, N]
    return top, lv.gather(1, top)


def raw_image(dataset, i: int) -> np.ndarray:
    """A displayable ``[H, W]`` or ``[H, W, 3]`` array of item i (raw pixels when the dataset keeps them)."""
    if hasattr(dataset, "images"):
        return np.asarray(dataset.images[i])
    if hasattr(dataset, "load_image"):
        return np.asarray(dataset.load_image(i))
    x = dataset[i]["image"]
    x = x.detach().float().cpu() if torch.is_tensor(x) else torch.as_tensor(np.asarray(x), dtype=torch.float32)
    if x.ndim == 3 and x.shape[0] in (1, 3):
        x = x.permute(1, 2, 0)
    x = (x - x.min()) / (x.max() - x.min()).clamp(min=1e-8)
    return x.squeeze(-1).numpy()


def draw_retrieval_grid(
    query_images: Sequence[np.ndarray],
    retrieved_images: Sequence[Sequence[np.ndarray]],
    levels: np.ndarray | Tensor,
    num_levels: int,
    row_titles: Sequence[str] | None = None,
    level_names: Sequence[str] | None = None,
    title: str | None = None,
    path: str | Path | None = None,
    cell_inches: float = 1.1,
):
    """Draw one row per query: the query (black frame), then its top-k framed by relevance level.

    Args:
        query_images: Q images (``[H, W]`` grayscale or ``[H, W, 3]``).
        retrieved_images: Q lists of k images.
        levels: ``[Q, k]`` shared levels (0..num_levels) of the retrieved items.
        num_levels: L, for the colour scale.
        row_titles: optional label left of each row (e.g. the model's name).
        level_names: legend names of the levels 0..L (default "t=0" ...).
        path: if given, the PNG is written there.
    Returns the matplotlib Figure (closed when saved).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    levels = np.asarray(levels.cpu() if torch.is_tensor(levels) else levels)
    n_rows = len(query_images)
    if n_rows == 0 or len(retrieved_images) != n_rows or levels.shape[0] != n_rows:
        raise ValueError(
            f"need as many retrieved rows and level rows as queries: {n_rows} queries, "
            f"{len(retrieved_images)} retrieved rows, levels {levels.shape}"
        )
    k = levels.shape[1]
    if any(len(r) != k for r in retrieved_images):
        raise ValueError(f"every row needs k={k} retrieved images (the width of `levels`)")
    if levels.min() < 0 or levels.max() > num_levels:
        raise ValueError(f"levels must lie in 0..{num_levels}, got [{levels.min()}, {levels.max()}]")
    colors = level_colors(num_levels)
    fig, axes = plt.subplots(
        n_rows, k + 1, figsize=(cell_inches * (k + 1) + 1.2, cell_inches * n_rows + 0.8), squeeze=False
    )

    def show(ax, img, color, width):
        img = np.asarray(img)
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
        ax.set_xticks([])
        ax.set_yticks([])
        for side in ax.spines.values():
            side.set_edgecolor(color)
            side.set_linewidth(width)

    for r in range(n_rows):
        show(axes[r, 0], query_images[r], (0, 0, 0), 2.0)
        if row_titles is not None:
            axes[r, 0].set_ylabel(row_titles[r], rotation=0, ha="right", va="center", fontsize=8)
        for c in range(k):
            show(axes[r, c + 1], retrieved_images[r][c], colors[int(levels[r, c])], 4.0)
    axes[0, 0].set_title("query", fontsize=8)
    for c in range(k):
        axes[0, c + 1].set_title(f"#{c + 1}", fontsize=8)
    names = list(level_names) if level_names is not None else [f"t={t}" for t in range(num_levels + 1)]
    handles = [Patch(facecolor=colors[t], label=names[t]) for t in range(num_levels + 1)]
    fig.legend(handles=handles, loc="lower center", ncol=num_levels + 1, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 0.95 if title else 1))
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
        plt.close(fig)
    return fig


def grid_levels(labels: Tensor) -> tuple[int, list[str]]:
    """``(L, names of the levels 0..L)`` of the frames: hierarchy levels, or for boolean multi-label ``[N, C]``
    labels the number of shared labels, up to the most labels an item carries."""
    if labels.dtype == torch.bool:
        n_lv = max(int(labels.sum(1).max()), 1)
        return n_lv, ["no shared label"] + [f"{t} shared label{'s' if t > 1 else ''}" for t in range(1, n_lv + 1)]
    n_lv = 1 if labels.ndim == 1 else int(labels.shape[1])
    return n_lv, _default_level_names(n_lv)


def _default_level_names(num_levels: int) -> list[str]:
    if num_levels == 1:
        return ["other class", "same class"]
    # t shared levels = the same node at hierarchy column L - t (column 0 = finest)
    names = ["unrelated"] + [f"same level-{num_levels - t} group" for t in range(1, num_levels)] + ["same class"]
    return names


try:  # the callback needs Lightning; the drawing functions do not
    import lightning as L

    class RetrievalGridCallback(L.Callback):
        """Draw the retrieval grid of fixed test queries at the end of ``trainer.test``.

        Args:
            query_idx: test-set indices of the queries (fixed, so that runs are comparable).
            k: retrieved items per query.
            filename: PNG name in the run folder (``trainer.default_root_dir``); a JSON with the same stem holds the
                query indices, top-k indices and levels.
            batch_size: embedding batch size.
        """

        def __init__(
            self,
            query_idx: Sequence[int] = (0, 1, 2, 3),
            k: int = 8,
            filename: str = "retrieval_grid.png",
            batch_size: int = 512,
            title: str | None = None,
        ) -> None:
            super().__init__()
            self.query_idx, self.k, self.filename = list(query_idx), k, filename
            self.batch_size, self.title = batch_size, title
            self.last_path: Path | None = None

        @torch.no_grad()
        def on_test_end(self, trainer, pl_module) -> None:
            if not trainer.is_global_zero:
                return
            dm = trainer.datamodule
            dataset = getattr(dm, "test_dataset", None) if dm is not None else None
            if dataset is None:
                log.warning("RetrievalGridCallback: no single test_dataset on the datamodule; no grid drawn")
                return
            was_training = pl_module.training
            pl_module.eval()
            loader = torch.utils.data.DataLoader(dataset, batch_size=self.batch_size, shuffle=False)
            embs, labs = [], []
            for batch in loader:
                embs.append(pl_module.embed(batch["image"].to(pl_module.device)).float().cpu())
                labs.append(torch.as_tensor(batch["label"]))
            pl_module.train(was_training)
            emb, labels = torch.cat(embs), torch.cat(labs)
            top, lv = retrieval_topk(emb, labels, self.query_idx, self.k)
            n_lv, names = grid_levels(labels)
            out = Path(trainer.default_root_dir)
            path = out / self.filename
            draw_retrieval_grid(
                [raw_image(dataset, q) for q in self.query_idx],
                [[raw_image(dataset, int(j)) for j in row] for row in top],
                lv,
                n_lv,
                level_names=names,
                title=self.title,
                path=path,
            )
            info = {"query_idx": self.query_idx, "topk": top.tolist(), "levels": lv.tolist(), "num_levels": n_lv}
            info["level_names"] = names  # the legend, read back by demos that draw several runs in one figure
            path.with_suffix(".json").write_text(json.dumps(info))
            self.last_path = path
            for lg in trainer.loggers:
                if type(lg).__name__ == "WandbLogger":
                    lg.log_image(key="test/retrieval_grid", images=[str(path)])
            log.info("retrieval grid saved to %s", path)

except ImportError:  # pragma: no cover
    pass
