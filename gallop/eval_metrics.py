"""GalLoP's test metrics from an :class:`gallop.eval_store.EvalStore` (names as logged):

- ``test/acc`` (and ``test/acc_global``, ``test/acc_local`` with local cosines): top-1 in % on the ID split;
- OOD: for each OOD set and score (``mcm``, ``l_mcm``, ``gl_mcm``) every metric of
  :func:`common.metrics.ood.ood_metrics` against the ID split's scores, as ``test/ood/<set>/<score>/<metric>``, and
  their mean over sets as ``test/ood/avg/<score>/<metric>``. Of the three FPR95 conventions, ``fpr95_closest`` is
  **GalLoP's published FPR95** (the Hendrycks/MCM ``fpr_and_fdr_at_recall`` routine: ID positive, FPR at the ID recall
  closest to 0.95; what ``gallop.tables`` reports); ``fpr95`` is HEAT's percentile version (ID positive,
  ``mean(ood < percentile(id, 95))``); ``fpr95_ood_positive`` is OpenOOD v1.5's (OOD positive). The first two agree
  up to the choice of operating point, the third differs for asymmetric score distributions;
- domain generalisation: ``test/dg/<set>/acc`` in % and their mean ``test/dg/avg_acc``.
"""

from __future__ import annotations

from collections import defaultdict

from common.data.splits import EvalSplit
from common.metrics.ood import ood_metrics
from gallop.eval_store import EvalStore

ACCURACY_KEYS = (("correct", "acc"), ("correct_global", "acc_global"), ("correct_local", "acc_local"))


def id_split(store: EvalStore) -> EvalSplit | None:
    """The first stored split of kind ``id`` (the one the OOD sets are scored against)."""
    return next((s for s in store.splits() if s.kind == "id"), None)


def test_metrics(store: EvalStore) -> dict[str, float]:
    """Every metric of the module docstring that the stored splits allow."""
    out: dict[str, float] = {}
    ref = id_split(store)
    if ref is not None:
        for key, name in ACCURACY_KEYS:
            x = store.gather(ref, key)
            if x is not None:
                out[f"test/{name}"] = 100.0 * x.mean().item()
    per_score: dict[str, list[dict[str, float]]] = defaultdict(list)
    for split in store.splits():
        if split.kind == "ood" and ref is not None:
            for score in store.keys(split):
                ood, idd = store.gather(split, score), store.gather(ref, score)
                if ood is None or idd is None:
                    continue
                m = ood_metrics(idd.cpu(), ood.cpu())
                per_score[score].append(m)
                out.update({f"test/ood/{split.name}/{score}/{k}": float(v) for k, v in m.items()})
        elif split.kind == "domain":
            x = store.gather(split, "correct")
            if x is not None:
                out[f"test/dg/{split.name}/acc"] = 100.0 * x.mean().item()
    for score, ms in per_score.items():
        for k in ms[0]:
            out[f"test/ood/avg/{score}/{k}"] = sum(m[k] for m in ms) / len(ms)
    dg = [v for k, v in out.items() if k.startswith("test/dg/")]
    if dg:
        out["test/dg/avg_acc"] = sum(dg) / len(dg)
    return out
