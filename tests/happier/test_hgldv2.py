"""H-GLDv2 hierarchy builder: zero-shot assignment on constructed embeddings (answers known by construction), the
file outputs, the cache, and a run through a tiny random-init CLIP and the command line."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from common.backbones.clip import ClipWeightsNotFoundError
from common.data.datasets.gldv2 import GLDv2Retrieval, GLDv2Train, load_retrieval_split
from happier.hgldv2 import (
    DEFAULT_SUPERCATEGORIES,
    assign,
    build,
    class_embeddings,
    load_clip_encoder,
    load_supercategories,
    main,
    mix_probs,
    zero_shot_probs,
)
from tests.helpers.gldv2_files import make_gldv2

KEYWORDS = ("castle", "church", "bridge")  # one embedding axis each; a 4th axis for texts without a keyword


class KeywordEncoder:
    """A stand-in for CLIP whose answers are known: a text is the one-hot of the first keyword it contains (the 4th
    axis if none), an image the one-hot of its strongest colour channel (red castle, green church, blue bridge)."""

    identity = "keyword-encoder"
    logit_scale = 100.0

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.images = 0

    def encode_text(self, texts):
        self.texts += list(texts)
        out = torch.zeros(len(texts), 4)
        for i, t in enumerate(texts):
            hits = [k for k, w in enumerate(KEYWORDS) if w in t.lower()]
            out[i, hits[0] if hits else 3] = 1.0
        return out

    def encode_images(self, paths, num_workers=0):
        self.images += len(paths)
        out, ok = torch.zeros(len(paths), 4), torch.zeros(len(paths), dtype=torch.bool)
        for i, p in enumerate(paths):
            if p.is_file():
                rgb = np.asarray(Image.open(p).convert("RGB"), dtype=np.float64).mean(axis=(0, 1))
                out[i, int(np.argmax(rgb))] = 1.0
                ok[i] = True
        return out, ok


def _yaml(path, threshold=0.5, cats=None):
    cats = cats or {"castle": ["castle"], "church building": ["church"], "bridge": ["bridge"]}
    lines = ['landmark_template: "a photo of {}."', 'templates: ["a photo of a {}.", "the {}"]']
    lines += [f"threshold: {threshold}", "other: other", "supercategories:"]
    lines += [f"  {name}: {json.dumps(ph)}" for name, ph in cats.items()]
    path.write_text("\n".join(lines) + "\n")
    return load_supercategories(path)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def gld(tmp_path):
    load_retrieval_split.cache_clear()
    return make_gldv2(tmp_path / "gldv2")


def test_zero_shot_assignment_on_constructed_embeddings():
    classes = torch.eye(3, 4)  # classes along axes 0, 1, 2
    x = torch.tensor([[0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0], [1.0, 1.0, 0.0, 0.0]])
    p = zero_shot_probs(x, classes, scale=100.0)
    assert p[0, 1] == pytest.approx(1.0) and p[1].tolist() == pytest.approx([1 / 3] * 3)
    assert p[2, 0] == pytest.approx(0.5) and p[2, 1] == pytest.approx(0.5)
    labels, conf, top = assign(p, ["a", "b", "c"], threshold=0.4, other="other")
    assert labels == ["b", "other", "a"] and top == ["b", "a", "a"]  # ties go to the first class
    assert conf.tolist() == pytest.approx([1.0, 1 / 3, 0.5])
    # the image probabilities move only the rows that have an image
    p_img = torch.tensor([[0.0, 0.0, 1.0]] * 3)
    mixed = mix_probs(p, p_img, torch.tensor([True, True, False]), image_weight=0.25)
    assert mixed[0].tolist() == pytest.approx([0.0, 0.75, 0.25]) and torch.equal(mixed[2], p[2])
    with pytest.raises(ValueError, match="image_weight"):
        mix_probs(p, p_img, torch.ones(3, dtype=torch.bool), image_weight=2.0)
    # prompt ensembling: the normalised mean of the normalised prompt embeddings
    c = class_embeddings([torch.tensor([[2.0, 0.0], [0.0, 5.0]])])
    assert c[0].tolist() == pytest.approx([2**-0.5, 2**-0.5])


def test_supercategory_yaml(tmp_path):
    sc = load_supercategories(DEFAULT_SUPERCATEGORIES)
    for name in ("church building", "cathedral", "castle", "bridge", "waterfall", "dam", "canal", "nature reserve"):
        assert name in sc.names
    assert sc.other == "other" and 0 < sc.threshold < 1 and all(sc.prompts(k) for k in range(len(sc.names)))
    bad = tmp_path / "bad.yaml"
    bad.write_text("supercategories: {a: [x], b: [y]}\ncolour: red\n")
    with pytest.raises(ValueError, match="unknown key"):
        load_supercategories(bad)
    bad.write_text("supercategories: {a: [x], other: [y]}\n")
    with pytest.raises(ValueError, match="bucket name"):
        load_supercategories(bad)
    bad.write_text('templates: ["no slot"]\nsupercategories: {a: [x], b: [y]}\n')
    with pytest.raises(ValueError, match="exactly one"):
        load_supercategories(bad)


def test_build_outputs_and_reader(gld, tmp_path):
    sc = _yaml(tmp_path / "sc.yaml")
    out = gld / "hgldv2"
    enc = KeywordEncoder()
    res = build(gld, out, enc, sc, split="train", sample_cols=3)
    rows = _rows(res.hierarchy_csv)
    # only the 4 landmarks of train_clean.csv; "Zzyzx Qwerty" has no keyword: probability 1/3 < 0.5 -> other
    assert [(int(r["landmark_id"]), r["hierarchical_label"]) for r in rows] == [
        (3, "church building"),
        (7, "castle"),
        (12, "bridge"),
        (40, "other"),
    ]
    assert rows[0]["name"] == "St. Oswald's Church, Dean" and rows[3]["top_choice"] == "castle"
    assert float(rows[1]["confidence"]) == pytest.approx(1.0, abs=1e-4)
    assert float(rows[3]["confidence"]) == pytest.approx(1 / 3, abs=1e-4)
    summary = {r["hierarchical_label"]: (int(r["landmarks"]), int(r["images"])) for r in _rows(res.summary_csv)}
    assert summary == {"castle": (1, 3), "church building": (1, 2), "bridge": (1, 2), "other": (1, 1)}
    with Image.open(res.samples_png) as im:
        assert im.size[0] > 100 and im.size[1] > 100
    info = json.loads((out / "train_build.json").read_text())
    assert info["num_landmarks"] == 4 and info["num_other"] == 1 and info["encoder"] == "keyword-encoder"
    # the builder's CSV is a hierarchy the reader takes as it is
    ds = GLDv2Train(gld, hierarchy="hgldv2/train_hierarchy.csv")
    assert ds.class_ids[1].tolist() == ["bridge", "castle", "church building", "other"] and ds.labels.shape == (8, 2)
    assert len(GLDv2Train(gld, hierarchy="hgldv2/train_hierarchy.csv", drop_labels=["other"])) == 7


def test_build_is_cached_and_threshold_cheap_to_change(gld, tmp_path):
    sc = _yaml(tmp_path / "sc.yaml")
    build(gld, gld / "hgldv2", KeywordEncoder(), sc)
    enc = KeywordEncoder()
    res = build(gld, gld / "hgldv2", enc, sc, threshold=0.0)
    assert not any("Castle Howard" in t for t in enc.texts)  # landmark names came from the cache
    assert res.labels == ["church building", "castle", "bridge", "castle"] and res.num_other == 0
    assert len(list((gld / "hgldv2" / "cache").rglob("part_*.pt"))) == 1
    everything = build(gld, gld / "hgldv2", KeywordEncoder(), sc, all_landmarks=True)
    assert everything.num_landmarks == 5 and everything.labels[-1] == "other"  # landmark 99 "Unused Landmark"


def test_build_with_images(gld, tmp_path):
    sc = _yaml(tmp_path / "sc.yaml")
    (gld / "train" / "c" / "0" / "0" / "c0000001.jpg").unlink()  # Tower Bridge keeps one image of two
    enc = KeywordEncoder()
    res = build(gld, gld / "hgldv2", enc, sc, images_per_landmark=2, image_weight=0.5)
    assert enc.images == 7 and res.num_with_images == 4 and res.num_missing_images == 0
    # "Zzyzx Qwerty": name 1/3 each, its (orange, mostly red) image says castle: 0.5/3 + 0.5 = 0.67 >= 0.5
    assert res.labels == ["church building", "castle", "bridge", "castle"]
    for p in (gld / "train" / "d").rglob("*.jpg"):
        p.unlink()
    res = build(gld, gld / "hgldv2b", KeywordEncoder(), sc, images_per_landmark=2)
    assert res.num_missing_images == 1 and res.labels[-1] == "other"  # no readable image: name only


def test_build_index_split_feeds_the_retrieval_reader(gld, tmp_path):
    sc = _yaml(tmp_path / "sc.yaml")
    res = build(gld, gld / "hgldv2", KeywordEncoder(), sc, split="index")
    assert res.labels == ["castle", "bridge", "church building"]  # landmarks 501, 502, 503
    q = GLDv2Retrieval(gld, "query", hierarchy="hgldv2/index_hierarchy.csv")
    g = GLDv2Retrieval(gld, "index", hierarchy="hgldv2/index_hierarchy.csv")
    assert q.labels.shape == (3, 2) and g.labels.shape == (6, 2) and g.num_groups_without_coarse == 0


def test_tiny_clip_forced_assignment(gld, tmp_path):
    """Each super-category's only prompt is a landmark's own text, so CLIP's text encoder (random init) maps the
    landmark and its class to the same embedding: the argmax is forced whatever the weights."""
    names = ["St. Oswald's Church, Dean", "Castle Howard", "Tower Bridge", "Zzyzx Qwerty"]
    yaml_path = tmp_path / "sc.yaml"
    lines = ['landmark_template: "a photo of {}."', 'templates: ["a photo of {}."]', "threshold: 0.0"]
    lines += ["supercategories:"] + [f"  class{k}: [{json.dumps(n)}]" for k, n in enumerate(names)]
    yaml_path.write_text("\n".join(lines) + "\n")
    sc = load_supercategories(yaml_path)
    enc = load_clip_encoder("tiny_clip", None, None, batch_size=3)
    u = enc.encode_text([sc.landmark_template.format(n) for n in names])
    cos = F.normalize(u, dim=-1) @ class_embeddings([enc.encode_text(sc.prompts(k)) for k in range(4)]).T
    assert torch.equal(cos.argmax(1), torch.arange(4))
    res = build(gld, gld / "hgldv2", enc, sc, images_per_landmark=1, image_weight=0.0)
    assert res.labels == ["class0", "class1", "class2", "class3"] and res.num_with_images == 4


def test_command_line(gld, tmp_path, capsys):
    sc = tmp_path / "sc.yaml"
    _yaml(sc)
    args = ["build", "--root", str(gld), "--supercategories", str(sc), "--device", "cpu", "--num-workers", "0"]
    res = main([*args, "--model", "tiny_clip", "--pretrained", "none", "--out", str(tmp_path / "out")])
    assert res.hierarchy_csv == tmp_path / "out" / "train_hierarchy.csv" and res.num_landmarks == 4
    assert "landmarks ->" in capsys.readouterr().out
    with pytest.raises(ClipWeightsNotFoundError, match="make weights-clip"):
        main([*args, "--model", "ViT-B-16", "--pretrained", "openai", "--weights-dir", str(tmp_path / "weights")])
