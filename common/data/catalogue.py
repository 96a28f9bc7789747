"""The catalogue of datasets that ``make data-<name>`` fetches or checks: one plain table, read by
:mod:`common.data.download`.

Each :class:`Dataset` says where its files come from (:class:`Source`: mirrors, the *published* checksum and where it
was published, which part of the archive goes where under ``DATA_DIR``), which paths must exist afterwards
(``layout``), which readers must then load it (``readers``), what a person must fetch by hand when a login or licence
stands in the way (``manual``), and which links to make so one copy serves several readers (``links``).

Checksums are never computed by us: each one is copied from where it was published (``checksum_from``). Where no
checksum is published the source says so (``checksum_from=NO_CHECKSUM``) and the extracted layout plus the readers
are the only check. ``git_sha1`` is the git blob id that a repository's tree lists for the file (sha1 of
``b"blob <size>\\0" + content``). ``md5_url`` is for checksums published one file per archive next to the archives
(GLDv2's ``md5sum/<split>/md5.images_NNN.txt``): the downloader reads the md5 from there before it downloads.

Paths are relative to ``DATA_DIR`` (``paths.data_dir`` in the configs). Install pairs ``(src, dst)`` name ``src``
inside the extracted archive (``""`` = the downloaded file itself when it is not an archive) and ``dst`` under
``DATA_DIR``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

NO_CHECKSUM = "none published (the extracted layout and the readers are checked instead)"
TORCHVISION = "torchvision 0.29's dataset class"
TFDS = "TensorFlow Datasets' checksums.tsv"
GALLOP_COMMIT = "f75999e1601cc66e44bc6ff6faa8612021055ff3"
GALLOP_FILES = f"https://raw.githubusercontent.com/MarcLafon/gallop/{GALLOP_COMMIT}/gallop/datasets/files/"
GALLOP_TREE = f"the git tree of MarcLafon/gallop at {GALLOP_COMMIT[:10]} (blob id)"
DEBIAN_FASHION_MNIST = "dataset-fashion-mnist"


def google_drive(file_id: str) -> str:
    """A direct download URL for a public Google Drive file (no HTML confirmation page)."""
    return f"https://drive.usercontent.google.com/download?id={file_id}&export=download&confirm=t"


@dataclass(frozen=True)
class Source:
    """One file to fetch (or to be put in ``DATA_DIR/.downloads/`` by hand when ``urls`` is empty).

    Attributes:
        filename: its name under ``DATA_DIR/.downloads/``; the archive type follows from the suffix
            (``.zip``, ``.tar``, ``.tar.gz``/``.tgz``; anything else is a plain file).
        urls: mirrors tried in order; empty = manual (a login or licence is needed).
        install: ``(src inside the extracted archive, dst under DATA_DIR)`` pairs moved into place.
        md5, sha256, git_sha1: the published checksum (at most one is needed); ``size`` in bytes if published.
        md5_url: where the md5 of this file is published as a text file (an ``md5sum`` line, or the digest alone);
            read at download time, in place of ``md5``.
        checksum_from: where the checksum was published, or :data:`NO_CHECKSUM`.
        inner: archives inside the archive to unpack next to themselves before installing (Caltech-101).
        convert: a converter of :data:`common.data.download.CONVERTERS` (run on the extracted tree) or an extractor
            of :data:`common.data.download.EXTRACTORS` (run instead of the plain extraction).
        merge: the archive is one of several that fill the same folders (GLDv2's 500 train TARs all extract into
            ``train/<a>/<b>/<c>/``): its files are moved into the existing ``dst`` folders instead of installing each
            folder with one rename, and ``dst/.extracted/<filename>`` marks it done so an interrupted run resumes at
            the next archive.
    """

    filename: str
    urls: tuple[str, ...]
    install: tuple[tuple[str, str], ...]
    checksum_from: str
    md5: str | None = None
    sha256: str | None = None
    git_sha1: str | None = None
    size: int | None = None
    inner: tuple[str, ...] = ()
    convert: str | None = None
    md5_url: str | None = None
    merge: bool = False

    def __post_init__(self) -> None:
        has_sum = any((self.md5, self.sha256, self.git_sha1, self.md5_url))
        if has_sum == (self.checksum_from == NO_CHECKSUM):
            raise ValueError(f"{self.filename}: give a published checksum with its source, or NO_CHECKSUM")
        if self.merge and not self.install:
            raise ValueError(f"{self.filename}: merge=True needs the folders to merge into (install)")


@dataclass(frozen=True)
class ReaderCheck:
    """Construct ``target`` (a dotted class path) with ``root=DATA_DIR/root`` and ``kwargs``: it must load, and
    (``files=True``) the first and last files it lists must exist; ``files=False`` checks only that the reader parses
    the metadata (an entry that fetches the metadata without the images)."""

    target: str
    root: str
    kwargs: dict = field(default_factory=dict)
    files: bool = True


@dataclass(frozen=True)
class Dataset:
    """One ``make data-<name>`` target. See the module docstring."""

    name: str
    title: str
    homepage: str
    layout: tuple[str, ...]
    readers: tuple[ReaderCheck, ...]
    sources: tuple[Source, ...] = ()
    manual: str | None = None
    links: tuple[tuple[str, str], ...] = ()
    requires: tuple[str, ...] = ()
    debian_package: str | None = None
    notes: str = ""

    @property
    def is_manual(self) -> bool:
        """Something must be fetched by hand (a login, a licence, or no direct download)."""
        return self.manual is not None


# --------------------------------------------------------------------------------------------------------------------
# shared sources
# --------------------------------------------------------------------------------------------------------------------
DTD_ARCHIVE = Source(
    "dtd-r1.0.1.tar.gz",
    ("https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz",),
    (("dtd", "dtd"),),
    checksum_from=TORCHVISION,
    md5="fff73e5086ae6bdbea199a49dfb8a4c1",
    size=625239812,
)
IMAGENET_CLASSNAMES = Source(
    "classnames.txt",
    (google_drive("1-61f_ol79pViBFDG_IDlUQSwoLcn2XXF"),),
    (("", "coop/imagenet/classnames.txt"),),
    checksum_from=NO_CHECKSUM,
)


def _split_zhou(folder: str, dataset: str, blob: str) -> Source:
    name = f"split_zhou_{dataset}.json"
    return Source(name, (GALLOP_FILES + name,), (("", f"coop/{folder}/{name}"),), GALLOP_TREE, git_sha1=blob)


def _coop_reader(name: str, split: str = "test") -> ReaderCheck:
    return ReaderCheck("common.data.datasets.coop.CoOpDataset", "coop", {"name": name, "split": split})


def _dg_reader(name: str) -> ReaderCheck:
    return ReaderCheck("common.data.datasets.imagenet_dg.ImageNetDG", "coop", {"name": name})


LSUN_CATEGORIES = (
    ("bedroom", "5d022e781b241c25ec2e1f1f769afcdb8091d7fd58362667aec03137b8114b12", 4670661),
    ("bridge", "83216a2974d6068c2e1d18086006e7380ff58540216f955ce87fe049b460cb0d", 6176834),
    ("church_outdoor", "34635b7547a3e51a15f942a4a4082dd6bc9cca381a953515cb2275c0eed50584", 5957308),
    ("classroom", "5e0e9a375d94091dfe1fa3be87d4a92f41c03f1c0b8e376acc7e05651de512d7", 5880261),
    ("conference_room", "927c94df52e10b9b374748c2b83b28b5860e946b3186dfd587985e274834650f", 5316084),
    ("dining_room", "bd604d4b91bb5a9611d4e0b85475efd20758390d1a4eb57b53973fcbb5aa8ab6", 5301030),
    ("kitchen", "329165f35ec61c4cf49f809246de300b8baad3ffcbda1ac30c27bdd32c84369a", 4867891),
    ("living_room", "30a23d9a3db5414e9c97865f60ffb2ee973bfa658a23dbca7188ea514c97c9fc", 5167755),
    ("restaurant", "efaa7bcb898ad6cb73b07b89fec3a9c670f4622912eea22fab3986c2cf9a1c20", 6232385),
    ("tower", "7f5257847bc01f4e40d4a1b3e24dd8fcd37063f12ca8cf31e726c2ee0b1ae104", 5223709),
)
FASHION_MNIST_FILES = (
    ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
    ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
    ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
    ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
)
GLDV2 = "https://s3.amazonaws.com/google-landmark"
GLDV2_MD5 = "the md5sum file published next to each TAR (GLDv2 README, cvdfoundation/google-landmark)"
GLDV2_METADATA = (  # (folder under GLDV2, file); installed as gldv2/<file>
    ("metadata", "train_clean.csv"),
    ("metadata", "train_label_to_category.csv"),
    ("metadata", "train_label_to_hierarchical.csv"),
    ("metadata", "index.csv"),
    ("metadata", "index_image_to_landmark.csv"),
    ("metadata", "index_label_to_category.csv"),
    ("metadata", "index_label_to_hierarchical.csv"),
    ("metadata", "test.csv"),
    ("ground_truth", "retrieval_solution_v2.1.csv"),
)
GLDV2_TARS = {"train": 500, "index": 100, "test": 20}  # images_000.tar ... per split (GLDv2 README)
GLDV2_TRAIN = "common.data.datasets.gldv2.GLDv2Train"
GLDV2_RETRIEVAL = "common.data.datasets.gldv2.GLDv2Retrieval"
COCO_ZIPS = "http://images.cocodataset.org"
COCO_READER = "common.data.datasets.coco_multilabel.COCOMultiLabel"


def _gldv2_tar(split: str, i: int) -> Source:
    """One of GLDv2's image TARs: extracted into ``gldv2/<split>/`` with the others (``<a>/<b>/<c>/<id>.jpg``)."""
    stem = f"images_{i:03d}"
    return Source(
        f"gldv2_{split}_{stem}.tar",
        (f"{GLDV2}/{split}/{stem}.tar",),
        (("", f"gldv2/{split}"),),
        GLDV2_MD5,
        md5_url=f"{GLDV2}/md5sum/{split}/md5.{stem}.txt",
        merge=True,
    )


IMAGENET_MANUAL = """ImageNet-1k (ILSVRC-2012) needs an account: log in at https://image-net.org/download-images.php and
download ILSVRC2012_img_train.tar (138 GB), ILSVRC2012_img_val.tar (6.3 GB) and ILSVRC2012_devkit_t12.tar.gz.
Put the three files in {downloads}/ and run this target again: it checks torchvision's md5s, unpacks the train
tar's 1000 class tars into imagenet/train/<wnid>/ and sorts the val images into imagenet/val/<wnid>/ with the
devkit's ground truth.
If you already have ImageNet as train/<wnid>/ and val/<wnid>/ folders, link them instead:
  ln -s /path/to/imagenet {data_dir}/imagenet"""

# --------------------------------------------------------------------------------------------------------------------
# the catalogue
# --------------------------------------------------------------------------------------------------------------------
DATASETS: tuple[Dataset, ...] = (
    Dataset(
        "fashion-mnist",
        "Fashion-MNIST (the embedded default dataset)",
        "https://github.com/zalandoresearch/fashion-mnist",
        layout=tuple(f"fashion-mnist/{f}" for f, _ in FASHION_MNIST_FILES),
        readers=(
            ReaderCheck("common.data.datasets.fashion_mnist.FashionMNIST", "fashion-mnist", {"split": "train"}),
            ReaderCheck("common.data.datasets.fashion_mnist.FashionMNIST", "fashion-mnist", {"split": "test"}),
        ),
        sources=tuple(
            Source(
                f,
                (f"http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/{f}",),
                (("", f"fashion-mnist/{f}"),),
                TORCHVISION,
                md5=md5,
            )
            for f, md5 in FASHION_MNIST_FILES
        ),
        debian_package=DEBIAN_FASHION_MNIST,
        notes="Copied from Debian's dataset-fashion-mnist package when it is installed (or apt-get can install it); "
        "its files are recompressed, so they are checked by reading them (IDX headers and sizes), not by md5.",
    ),
    Dataset(
        "sop",
        "Stanford Online Products",
        "https://cvgl.stanford.edu/projects/lifted_struct/",
        layout=("Stanford_Online_Products/Ebay_train.txt", "Stanford_Online_Products/Ebay_test.txt"),
        readers=tuple(
            ReaderCheck("common.data.datasets.sop.StanfordOnlineProducts", "Stanford_Online_Products", {"split": s})
            for s in ("train", "test")
        ),
        sources=(
            Source(
                "Stanford_Online_Products.zip",
                (
                    "ftp://cs.stanford.edu/cs/cvgl/Stanford_Online_Products.zip",
                    google_drive("1TclrpQOF_ullUP99wk_gjGN8pKvtErG8"),
                ),
                (("Stanford_Online_Products", "Stanford_Online_Products"),),
                TFDS,
                sha256="b04fa78210e69fab050ce73939550e1cd0f96890bdd98ec9fee732c3b756ef48",
                size=3083860082,
            ),
        ),
        notes="The second mirror is the Google Drive copy linked from the authors' README; the checksum is that of "
        "the official zip, so a differing mirror fails loudly rather than installing other files.",
    ),
    Dataset(
        "cub",
        "CUB-200-2011",
        "https://www.vision.caltech.edu/datasets/cub_200_2011/",
        layout=("CUB_200_2011/images",),
        readers=tuple(
            ReaderCheck("common.data.datasets.cub.CUB200", "CUB_200_2011", {"split": s}) for s in ("train", "test")
        ),
        sources=(
            Source(
                "CUB_200_2011.tgz",
                ("https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz",),
                (("CUB_200_2011", "CUB_200_2011"),),
                "published with the original archive (powerful-benchmarker's and TDeVries/cub2011_dataset's CUB class)",
                md5="97eceeb196236b17998738112f37df78",
                size=1150585339,
            ),
        ),
    ),
    Dataset(
        "inat",
        "iNaturalist-2018 with the Smooth-AP retrieval split (ROADMAP iNat, HAPPIER iNat-base and iNat-full)",
        "https://github.com/visipedia/inat_comp/tree/master/2018",
        layout=(
            "inaturalist/Inat_dataset_splits/Inaturalist_train_set1.txt",
            "inaturalist/Inat_dataset_splits/Inaturalist_test_set1.txt",
            "inaturalist/train_val2018",
            "inaturalist/train2018.json",
        ),
        readers=(
            ReaderCheck("common.data.datasets.inat.INaturalist2018", "inaturalist", {"split": "train", "levels": 2}),
            ReaderCheck("common.data.datasets.inat.INaturalist2018", "inaturalist", {"split": "test", "levels": 2}),
            ReaderCheck("common.data.datasets.inat_hierarchy.INatHierarchyDataset", "inaturalist", {"split": "test"}),
        ),
        sources=(
            Source(
                "train_val2018.tar.gz",
                ("https://ml-inat-competition-datasets.s3.amazonaws.com/2018/train_val2018.tar.gz",),
                (("train_val2018", "inaturalist/train_val2018"),),
                TFDS,
                sha256="276522b02b65d98ee5168a17415b2b1ec971b035bd62959e37b80b1092130495",
                size=127945569561,
            ),
            Source(
                "train2018.json.tar.gz",
                ("https://ml-inat-competition-datasets.s3.amazonaws.com/2018/train2018.json.tar.gz",),
                (("train2018.json", "inaturalist/train2018.json"),),
                TFDS,
                sha256="be550dd4e2692458e508dd03e3a8d79f087453e2ad570a438a4ff198a7abc68f",
                size=20951917,
            ),
            Source(
                "Inat_dataset_splits.zip",
                (google_drive("1sXfkBTFDrRU3__-NUs1qBP3sf_0uMB98"),),
                (("Inat_dataset_splits", "inaturalist/Inat_dataset_splits"),),
                NO_CHECKSUM,
            ),
        ),
        notes="One target serves both HAPPIER splits: iNat-base reads the split files, iNat-full also train2018.json. "
        "The split files are Smooth-AP's (Google Drive link in Andrew-Brown1/Smooth_AP's README).",
    ),
    Dataset(
        "inshop",
        "In-Shop Clothes Retrieval (DeepFashion)",
        "https://mmlab.ie.cuhk.edu.hk/projects/DeepFashion/InShopRetrieval.html",
        layout=("inshop/list_eval_partition.txt", "inshop/img"),
        readers=tuple(
            ReaderCheck("common.data.datasets.inshop.InShop", "inshop", {"split": s})
            for s in ("train", "query", "gallery")
        ),
        sources=(
            Source("img.zip", (), (("img", "inshop/img"),), NO_CHECKSUM),
            Source("list_eval_partition.txt", (), (("", "inshop/list_eval_partition.txt"),), NO_CHECKSUM),
        ),
        manual="""In-Shop is shared through a Google Drive folder after accepting DeepFashion's agreement
(https://mmlab.ie.cuhk.edu.hk/projects/DeepFashion/InShopRetrieval.html, "Download" link).
From the "In-shop Clothes Retrieval Benchmark" folder take Img/img.zip and Eval/list_eval_partition.txt,
put both files in {downloads}/ and run this target again (it unpacks img.zip into inshop/img/).""",
    ),
    *(
        Dataset(
            f"dyml-{kind}",
            f"DyML-{kind.capitalize()} (Dynamic Metric Learning, CVPR 2021)",
            "https://github.com/SupetZYK/DynamicMetricLearning",
            layout=(f"dyml_{kind}/train/label.csv", f"dyml_{kind}/train/imgs", *bench),
            readers=readers,
            manual=f"""DyML is shared through OneDrive and Baidu Netdisk only (links in the README of
https://github.com/SupetZYK/DynamicMetricLearning). Download the {kind} archive and unpack it so that
{{data_dir}}/dyml_{kind}/train/label.csv exists, then run this target again to check it.""",
        )
        for kind, bench, readers in (
            (
                "vehicle",
                tuple(
                    f"dyml_vehicle/bmk_{b}/{f}"
                    for b in ("fine", "middle", "coarse")
                    for f in ("query.csv", "gallery.csv")
                ),
                (
                    ReaderCheck("common.data.datasets.dyml.DyMLDataset", "dyml_vehicle", {"split": "train"}),
                    *(
                        ReaderCheck(
                            "common.data.datasets.dyml.DyMLDataset", "dyml_vehicle", {"split": s, "benchmark": b}
                        )
                        for b in ("fine", "middle", "coarse")
                        for s in ("query", "gallery")
                    ),
                ),
            ),
            (
                "animal",
                tuple(
                    f"dyml_animal/bmk_{b}/{f}"
                    for b in ("fine", "middle", "coarse")
                    for f in ("query.csv", "gallery.csv")
                ),
                (
                    ReaderCheck("common.data.datasets.dyml.DyMLDataset", "dyml_animal", {"split": "train"}),
                    *(
                        ReaderCheck(
                            "common.data.datasets.dyml.DyMLDataset", "dyml_animal", {"split": s, "benchmark": b}
                        )
                        for b in ("fine", "middle", "coarse")
                        for s in ("query", "gallery")
                    ),
                ),
            ),
            (
                "product",
                ("dyml_product/mini-bmk_all_in_one/label.csv", "dyml_product/mini-bmk_all_in_one/imgs"),
                (
                    ReaderCheck("common.data.datasets.dyml.DyMLDataset", "dyml_product", {"split": "train"}),
                    ReaderCheck("common.data.datasets.dyml.DyMLDataset", "dyml_product", {"split": "test"}),
                ),
            ),
        )
    ),
    # ---- HAPPIER's extensions: H-GLDv2 and multi-label COCO (docs/hgldv2_coco.md) ------------------------------
    Dataset(
        "gldv2-metadata",
        "Google Landmarks v2.1: the CSV files only (labels, index and test lists, retrieval ground truth, H-GLDv2 labels)",
        "https://github.com/cvdfoundation/google-landmark",
        layout=tuple(f"gldv2/{f}" for _, f in GLDV2_METADATA),
        readers=(
            ReaderCheck(GLDV2_TRAIN, "gldv2", {}, files=False),
            ReaderCheck(GLDV2_TRAIN, "gldv2", {"hierarchy": "train_label_to_hierarchical.csv"}, files=False),
            ReaderCheck(GLDV2_RETRIEVAL, "gldv2", {"split": "query"}, files=False),
        ),
        sources=tuple(
            Source(f"gldv2_{f}", (f"{GLDV2}/{folder}/{f}",), (("", f"gldv2/{f}"),), NO_CHECKSUM)
            for folder, f in GLDV2_METADATA
        ),
        notes="Enough for the H-GLDv2 labels (the published train/index_label_to_hierarchical.csv, or `make "
        "data-hgldv2` from the category names); the readers parse the files, the images come with `make data-gldv2`.",
    ),
    Dataset(
        "gldv2",
        "Google Landmarks v2.1 with its images (train_clean, index, test): about 600 GB of TARs",
        "https://github.com/cvdfoundation/google-landmark",
        layout=("gldv2/train", "gldv2/index", "gldv2/test"),
        readers=(
            ReaderCheck(GLDV2_TRAIN, "gldv2", {"check_files": True}),
            ReaderCheck(GLDV2_RETRIEVAL, "gldv2", {"split": "query", "check_files": True}),
            ReaderCheck(GLDV2_RETRIEVAL, "gldv2", {"split": "index", "check_files": True}),
        ),
        sources=tuple(_gldv2_tar(split, i) for split, n in GLDV2_TARS.items() for i in range(n)),
        requires=("gldv2-metadata",),
        notes="500 train TARs (~1 GB each), 100 index (~850 MB) and 20 test (~500 MB), each checked against the md5 "
        "published beside it and extracted into gldv2/<split>/ (deleted afterwards unless --keep-archives); an "
        "interrupted run resumes at the first TAR not yet extracted. The check stats every image the readers list "
        "(2.3 million files), since one missing TAR would otherwise go unnoticed.",
    ),
    Dataset(
        "coco",
        "MS-COCO 2017 train/val images and instance annotations (multi-label retrieval)",
        "https://cocodataset.org/#download",
        layout=(
            "coco/annotations/instances_train2017.json",
            "coco/annotations/instances_val2017.json",
            "coco/train2017",
            "coco/val2017",
        ),
        readers=(
            ReaderCheck(COCO_READER, "coco", {"split": "query", "num_queries": 2, "num_train": 2}),
            ReaderCheck(COCO_READER, "coco", {"split": "train", "protocol": "official"}),
            ReaderCheck(COCO_READER, "coco", {"split": "val", "protocol": "official"}),
        ),
        sources=(
            Source(
                "train2017.zip", (f"{COCO_ZIPS}/zips/train2017.zip",), (("train2017", "coco/train2017"),), NO_CHECKSUM
            ),
            Source("val2017.zip", (f"{COCO_ZIPS}/zips/val2017.zip",), (("val2017", "coco/val2017"),), NO_CHECKSUM),
            Source(
                "annotations_trainval2017.zip",
                (f"{COCO_ZIPS}/annotations/annotations_trainval2017.zip",),
                (("annotations", "coco/annotations"),),
                NO_CHECKSUM,
            ),
        ),
        notes="cocodataset.org publishes no checksums (GluonCV's mscoco.py lists sha1 digests of these zips: a third "
        "party's, not used). The hashing-protocol check draws 2 queries and 2 training images: it checks the files, "
        "not the protocol's sizes (the configs draw 5,000 and 10,000).",
    ),
    Dataset(
        "cifar10",
        "CIFAR-10 (python version)",
        "https://www.cs.toronto.edu/~kriz/cifar.html",
        layout=("cifar-10-batches-py/data_batch_1", "cifar-10-batches-py/test_batch"),
        readers=tuple(
            ReaderCheck("common.data.datasets.cifar.CIFAR", "", {"name": "cifar10", "split": s})
            for s in ("train", "test")
        ),
        sources=(
            Source(
                "cifar-10-python.tar.gz",
                ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
                (("cifar-10-batches-py", "cifar-10-batches-py"),),
                TORCHVISION,
                md5="c58f30108f718f92721af3b95e74349a",
            ),
        ),
    ),
    Dataset(
        "cifar100",
        "CIFAR-100 (python version)",
        "https://www.cs.toronto.edu/~kriz/cifar.html",
        layout=("cifar-100-python/train", "cifar-100-python/test"),
        readers=tuple(
            ReaderCheck("common.data.datasets.cifar.CIFAR", "", {"name": "cifar100", "split": s})
            for s in ("train", "test")
        ),
        sources=(
            Source(
                "cifar-100-python.tar.gz",
                ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",),
                (("cifar-100-python", "cifar-100-python"),),
                TORCHVISION,
                md5="eb9058c3a382ffc7106e4002c42a8d85",
            ),
        ),
    ),
    Dataset(
        "svhn",
        "SVHN (cropped digits, test split: HEAT's OOD set)",
        "http://ufldl.stanford.edu/housenumbers/",
        layout=("svhn/test_32x32.mat",),
        readers=(ReaderCheck("common.data.datasets.svhn.SVHN", "svhn", {"split": "test"}),),
        sources=(
            Source(
                "test_32x32.mat",
                ("http://ufldl.stanford.edu/housenumbers/test_32x32.mat",),
                (("", "svhn/test_32x32.mat"),),
                TORCHVISION,
                md5="eb5a983be6a315427106f1b164d9cef3",
            ),
        ),
        notes="Only the test split is fetched (the OOD set); train_32x32.mat and extra_32x32.mat go beside it by hand.",
    ),
    Dataset(
        "dtd",
        "Describable Textures (DTD)",
        "https://www.robots.ox.ac.uk/~vgg/data/dtd/",
        layout=("dtd/images", "dtd/labels/test1.txt"),
        readers=(
            ReaderCheck("common.data.datasets.ood_folders.DTD", "", {"split": "test", "partition": 1}),
            ReaderCheck("common.data.datasets.ood_folders.DTD", "", {"split": "all"}),
        ),
        sources=(DTD_ARCHIVE,),
    ),
    Dataset(
        "places365",
        "Places365-Standard, small validation set (256x256)",
        "http://places2.csail.mit.edu/download.html",
        layout=("places365/places365_val.txt", "places365/val_256"),
        readers=(ReaderCheck("common.data.datasets.ood_folders.Places365", "", {}),),
        sources=(
            Source(
                "filelist_places365-standard.tar",
                ("http://data.csail.mit.edu/places/places365/filelist_places365-standard.tar",),
                (("places365_val.txt", "places365/places365_val.txt"),),
                TORCHVISION,
                md5="35a0585fee1fa656440f3ab298f8479c",
            ),
            Source(
                "val_256.tar",
                ("http://data.csail.mit.edu/places/places365/val_256.tar",),
                (("val_256", "places365/val_256"),),
                TORCHVISION,
                md5="e27b17d8d44f4af9a78502beb927f808",
            ),
        ),
    ),
    Dataset(
        "lsun",
        "LSUN scene categories, validation images (300 per category)",
        "https://www.yf.io/p/lsun",
        layout=tuple(f"LSUN/{c}" for c, _, _ in LSUN_CATEGORIES),
        readers=(ReaderCheck("common.data.datasets.ood_folders.LSUN", "", {"per_category": 300}),),
        sources=tuple(
            Source(
                f"{c}_val_lmdb.zip",
                (f"http://dl.yf.io/lsun/scenes/{c}_val_lmdb.zip",),
                (("export", f"LSUN/{c}"),),
                TFDS,
                sha256=sha,
                size=size,
                convert="lsun_lmdb",
            )
            for c, sha, size in LSUN_CATEGORIES
        ),
        notes="The val sets ship as lmdb databases; the target writes each image as a file (the bytes as stored, "
        "webp) into LSUN/<category>/. This needs the `lmdb` package (`pip install lmdb`, in the dev extra).",
    ),
    Dataset(
        "tinyimagenet",
        "Tiny ImageNet (200 classes, 64x64)",
        "https://www.kaggle.com/c/tiny-imagenet",
        layout=("tiny-imagenet-200/wnids.txt", "tiny-imagenet-200/test/images", "tiny-imagenet-200/val/images"),
        readers=(
            ReaderCheck("common.data.datasets.ood_folders.TinyImageNet", "", {"split": "test"}),
            ReaderCheck("common.data.datasets.ood_folders.TinyImageNet", "", {"split": "val"}),
        ),
        sources=(
            Source(
                "tiny-imagenet-200.zip",
                ("http://cs231n.stanford.edu/tiny-imagenet-200.zip",),
                (("tiny-imagenet-200", "tiny-imagenet-200"),),
                "no official one; lvyilin/pytorch-fgvc-dataset's tiny_imagenet.py",
                md5="90528d7ca1a48142e341f4ef8d21d0de",
            ),
        ),
    ),
    Dataset(
        "imagenet",
        "ImageNet-1k (ILSVRC-2012) train and val as class folders",
        "https://image-net.org/",
        layout=("imagenet/train", "imagenet/val"),
        readers=(ReaderCheck("common.data.datasets.imagenet_ood.ImageNetVal", "", {}),),
        sources=(
            Source(
                "ILSVRC2012_devkit_t12.tar.gz",
                (),
                (),
                TORCHVISION,
                md5="fa75699e90414af021442c21a62c3abf",
            ),
            Source(
                "ILSVRC2012_img_val.tar",
                (),
                (("val", "imagenet/val"),),
                TORCHVISION,
                md5="29b22e2961454d5413ddabcf34fc5622",
                convert="imagenet_val",
            ),
            Source(
                "ILSVRC2012_img_train.tar",
                (),
                (("train", "imagenet/train"),),
                TORCHVISION,
                md5="1d675b47d978889d74fa0da5fadfb00e",
                convert="imagenet_train",
            ),
        ),
        manual=IMAGENET_MANUAL,
        notes="HEAT reads imagenet/{train,val}/<wnid>/; GalLoP reads coop/imagenet/images/ (`make data-coop-imagenet` "
        "links it to this copy).",
    ),
    Dataset(
        "imagenet-ood",
        "ImageNet OOD sets of MOS (Huang & Li, CVPR 2021): iNaturalist, SUN, Places, Textures",
        "https://github.com/deeplearning-wisc/large_scale_ood",
        layout=("ood_data/iNaturalist/images", "ood_data/SUN/images", "ood_data/Places/images", "ood_data/dtd/images"),
        readers=tuple(
            ReaderCheck("common.data.datasets.imagenet_ood.ImageNetOOD", "", {"name": n})
            for n in ("inaturalist", "sun", "places", "textures")
        ),
        sources=tuple(
            Source(
                f"{n}.tar.gz",
                (f"http://pages.cs.wisc.edu/~huangrui/imagenet_ood_dataset/{n}.tar.gz",),
                ((n, f"ood_data/{n}"),),
                NO_CHECKSUM,
            )
            for n in ("iNaturalist", "SUN", "Places")
        ),
        links=(("ood_data/dtd", "dtd"),),
        requires=("dtd",),
        notes="Textures is all of DTD: ood_data/dtd is a link to the DTD copy of `make data-dtd`.",
    ),
    # ---- CoOp few-shot datasets (GalLoP) ---------------------------------------------------------------------------
    Dataset(
        "coop-imagenet",
        "ImageNet for CoOp/GalLoP (coop/imagenet/images/{train,val} + classnames.txt)",
        "https://github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md",
        layout=("coop/imagenet/images/train", "coop/imagenet/images/val", "coop/imagenet/classnames.txt"),
        readers=(ReaderCheck("common.data.datasets.imagenet_dg.ImageNetDG", "coop", {"name": "imagenet"}),),
        sources=(IMAGENET_CLASSNAMES,),
        links=(("coop/imagenet/images", "imagenet"),),
        requires=("imagenet",),
        notes="coop/imagenet/images is a link to the ImageNet of `make data-imagenet`; classnames.txt is CoOp's "
        "(CLIP's class names; Google Drive link in CoOp's DATASETS.md).",
    ),
    Dataset(
        "coop-caltech101",
        "Caltech-101 (CoOp split)",
        "https://data.caltech.edu/records/mzrjq-6wc02",
        layout=("coop/caltech-101/101_ObjectCategories", "coop/caltech-101/split_zhou_Caltech101.json"),
        readers=(_coop_reader("caltech101", "train"), _coop_reader("caltech101")),
        sources=(
            Source(
                "caltech-101.zip",
                ("https://data.caltech.edu/records/mzrjq-6wc02/files/caltech-101.zip",),
                (("caltech-101/101_ObjectCategories", "coop/caltech-101/101_ObjectCategories"),),
                TORCHVISION,
                md5="3138e1922a9193bfa496528edbbc45d0",
                inner=("caltech-101/101_ObjectCategories.tar.gz",),
            ),
            _split_zhou("caltech-101", "Caltech101", "8be694a80de04a39fb159c462bea9696aa47ccf1"),
        ),
    ),
    Dataset(
        "coop-oxford-pets",
        "Oxford-IIIT Pets (CoOp split)",
        "https://www.robots.ox.ac.uk/~vgg/data/pets/",
        layout=("coop/oxford_pets/images", "coop/oxford_pets/split_zhou_OxfordPets.json"),
        readers=(_coop_reader("oxford_pets", "train"), _coop_reader("oxford_pets")),
        sources=(
            Source(
                "images.tar.gz",
                ("https://www.robots.ox.ac.uk/~vgg/data/pets/data/images.tar.gz",),
                (("images", "coop/oxford_pets/images"),),
                TORCHVISION,
                md5="5c4f3ee8e5d25df40f4fd59a7f44e54c",
            ),
            _split_zhou("oxford_pets", "OxfordPets", "fa821d9f9e7d32fdf3640bf74fa7491ed04f37da"),
        ),
    ),
    Dataset(
        "coop-stanford-cars",
        "Stanford Cars (CoOp split)",
        "https://ai.stanford.edu/~jkrause/cars/car_dataset.html",
        layout=(
            "coop/stanford_cars/cars_train",
            "coop/stanford_cars/cars_test",
            "coop/stanford_cars/split_zhou_StanfordCars.json",
        ),
        readers=(_coop_reader("stanford_cars", "train"), _coop_reader("stanford_cars")),
        sources=(_split_zhou("stanford_cars", "StanfordCars", "dcdb8264712e9940e74cfb0f06ddb8f9cc239b81"),),
        manual="""The original Stanford Cars downloads (ai.stanford.edu/~jkrause/car196/) are offline and no
official mirror exists (torchvision dropped its download too). Get cars_train/ and cars_test/ (8,144 and 8,041
JPEGs named 00001.jpg ...) from a copy you trust, e.g. the Kaggle dataset "stanford-cars-dataset", and put them in
{data_dir}/coop/stanford_cars/; this target fetches split_zhou_StanfordCars.json and checks the result.""",
    ),
    Dataset(
        "coop-oxford-flowers",
        "Oxford Flowers-102 (CoOp split)",
        "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/",
        layout=("coop/oxford_flowers/jpg", "coop/oxford_flowers/split_zhou_OxfordFlowers.json"),
        readers=(_coop_reader("oxford_flowers", "train"), _coop_reader("oxford_flowers")),
        sources=(
            Source(
                "102flowers.tgz",
                ("https://www.robots.ox.ac.uk/~vgg/data/flowers/102/102flowers.tgz",),
                (("jpg", "coop/oxford_flowers/jpg"),),
                TORCHVISION,
                md5="52808999861908f626f3c1f4e79d11fa",
            ),
            _split_zhou("oxford_flowers", "OxfordFlowers", "8d10037b0690b6c65e307a354b039efb0f42404c"),
        ),
    ),
    Dataset(
        "coop-food101",
        "Food-101 (CoOp split)",
        "https://data.vision.ee.ethz.ch/cvl/datasets_extra/food-101/",
        layout=("coop/food-101/images", "coop/food-101/split_zhou_Food101.json"),
        readers=(_coop_reader("food101", "train"), _coop_reader("food101")),
        sources=(
            Source(
                "food-101.tar.gz",
                ("http://data.vision.ee.ethz.ch/cvl/food-101.tar.gz",),
                (("food-101", "coop/food-101"),),
                TORCHVISION,
                md5="85eeb15f3717b99a5da872d97d918f87",
            ),
            _split_zhou("food-101", "Food101", "39557040ee6501bd32aa8b5dfd75f7941a32f0a7"),
        ),
    ),
    Dataset(
        "coop-fgvc-aircraft",
        "FGVC-Aircraft 2013b (its own train/val/test lists)",
        "https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/",
        layout=(
            "coop/fgvc_aircraft/images",
            "coop/fgvc_aircraft/variants.txt",
            "coop/fgvc_aircraft/images_variant_test.txt",
        ),
        readers=(_coop_reader("fgvc_aircraft"), _coop_reader("fgvc_aircraft", "trainval")),
        sources=(
            Source(
                "fgvc-aircraft-2013b.tar.gz",
                ("https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz",),
                (("fgvc-aircraft-2013b/data", "coop/fgvc_aircraft"),),
                TFDS,
                sha256="d5f68b1b81d6d7831eb9d5c5517074176b5dfbce6bcb43dc14ed1c66a87b8d75",
                size=2770575360,
            ),
        ),
    ),
    Dataset(
        "coop-sun397",
        "SUN397 (CoOp split)",
        "https://vision.princeton.edu/projects/2010/SUN/",
        layout=("coop/sun397/SUN397", "coop/sun397/split_zhou_SUN397.json"),
        readers=(_coop_reader("sun397", "train"), _coop_reader("sun397")),
        sources=(
            Source(
                "SUN397.tar.gz",
                ("http://vision.princeton.edu/projects/2010/SUN/SUN397.tar.gz",),
                (("SUN397", "coop/sun397/SUN397"),),
                TORCHVISION,
                md5="8ca2778205c41d23104230ba66911c7a",
            ),
            _split_zhou("sun397", "SUN397", "8d5725db8f70bcf02245665304f863e68f96a24c"),
        ),
    ),
    Dataset(
        "coop-dtd",
        "DTD (CoOp split)",
        "https://www.robots.ox.ac.uk/~vgg/data/dtd/",
        layout=("coop/dtd/images", "coop/dtd/split_zhou_DescribableTextures.json"),
        readers=(_coop_reader("dtd", "train"), _coop_reader("dtd")),
        sources=(_split_zhou("dtd", "DescribableTextures", "8dd197a94b598fa44ee3c9e35c486dd017ab00a7"),),
        links=(("coop/dtd/images", "dtd/images"),),
        requires=("dtd",),
        notes="coop/dtd/images is a link to the DTD of `make data-dtd`.",
    ),
    Dataset(
        "coop-eurosat",
        "EuroSAT RGB (CoOp split)",
        "https://github.com/phelber/EuroSAT",
        layout=("coop/eurosat/2750", "coop/eurosat/split_zhou_EuroSAT.json"),
        readers=(_coop_reader("eurosat", "train"), _coop_reader("eurosat")),
        sources=(
            Source(
                "EuroSAT.zip",
                (
                    "https://huggingface.co/datasets/torchgeo/eurosat/resolve/"
                    "c877bcd43f099cd0196738f714544e355477f3fd/EuroSAT.zip",
                ),
                (("2750", "coop/eurosat/2750"),),
                TORCHVISION,
                md5="c8fa014336c82ac7804f0398fcb19387",
            ),
            _split_zhou("eurosat", "EuroSAT", "6bdc847a5d5c49dcc78e8cb8707b87198cbfa5a4"),
        ),
    ),
    Dataset(
        "coop-ucf101",
        "UCF101 middle frames (CoOp split)",
        "https://github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md",
        layout=("coop/ucf101/UCF-101-midframes", "coop/ucf101/split_zhou_UCF101.json"),
        readers=(_coop_reader("ucf101", "train"), _coop_reader("ucf101")),
        sources=(
            Source(
                "UCF-101-midframes.zip",
                (google_drive("10Jqome3vtUA2keJkNanAiFpgbyC9Hc2O"),),
                (("UCF-101-midframes", "coop/ucf101/UCF-101-midframes"),),
                NO_CHECKSUM,
            ),
            _split_zhou("ucf101", "UCF101", "ea87e3de7b4f6f00fdd77618e34a23508b4c5590"),
        ),
        notes="CoOp's own extraction of the middle frame of each video (Google Drive link in CoOp's DATASETS.md).",
    ),
    # ---- ImageNet domain-shifted test sets (GalLoP's DG table) ------------------------------------------------------
    Dataset(
        "imagenet-v2",
        "ImageNet-V2 matched-frequency",
        "https://github.com/modestyachts/ImageNetV2",
        layout=("coop/imagenetv2/imagenetv2-matched-frequency-format-val", "coop/imagenet/classnames.txt"),
        readers=(_dg_reader("imagenet_v2"),),
        sources=(
            Source(
                "imagenetv2-matched-frequency.tar.gz",
                (
                    "https://huggingface.co/datasets/vaishaal/ImageNetV2/resolve/main/imagenetv2-matched-frequency.tar.gz",
                ),
                (
                    (
                        "imagenetv2-matched-frequency-format-val",
                        "coop/imagenetv2/imagenetv2-matched-frequency-format-val",
                    ),
                ),
                TFDS,
                sha256="f0c37fdf925916b19ea1323cd9a2208cdb6959ba2c32eef2a7fc393835c9ca7c",
                size=1264079360,
            ),
            IMAGENET_CLASSNAMES,
        ),
    ),
    Dataset(
        "imagenet-sketch",
        "ImageNet-Sketch",
        "https://github.com/HaohanWang/ImageNet-Sketch",
        layout=("coop/imagenet-sketch/images", "coop/imagenet/classnames.txt"),
        readers=(_dg_reader("imagenet_sketch"),),
        sources=(
            Source(
                "ImageNet-Sketch.zip",
                (google_drive("1Mj0i5HBthqH1p_yeXzsg22gZduvgoNeA"),),
                (("sketch", "coop/imagenet-sketch/images"),),
                TFDS,
                sha256="4d3ce6b82a7c48aabf14aeac105eb533e75707f152cc858f55bfc022031a72ed",
                size=7593573012,
            ),
            IMAGENET_CLASSNAMES,
        ),
    ),
    Dataset(
        "imagenet-a",
        "ImageNet-A (natural adversarial examples, 200 classes)",
        "https://github.com/hendrycks/natural-adv-examples",
        layout=("coop/imagenet-adversarial/imagenet-a", "coop/imagenet/classnames.txt"),
        readers=(_dg_reader("imagenet_a"),),
        sources=(
            Source(
                "imagenet-a.tar",
                ("https://people.eecs.berkeley.edu/~hendrycks/imagenet-a.tar",),
                (("imagenet-a", "coop/imagenet-adversarial/imagenet-a"),),
                TFDS,
                sha256="3bb3632277e6ba6392ea64c02ddbf4dd2266c9caffd6bc09c9656d28f012589e",
                size=687552512,
            ),
            IMAGENET_CLASSNAMES,
        ),
    ),
    Dataset(
        "imagenet-r",
        "ImageNet-R (renditions, 200 classes)",
        "https://github.com/hendrycks/imagenet-r",
        layout=("coop/imagenet-rendition/imagenet-r", "coop/imagenet/classnames.txt"),
        readers=(_dg_reader("imagenet_r"),),
        sources=(
            Source(
                "imagenet-r.tar",
                ("https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar",),
                (("imagenet-r", "coop/imagenet-rendition/imagenet-r"),),
                TFDS,
                sha256="18c6bf493b39a0d975d48e587437f562caab9c52ae6327dcfa9dd8eb54aa1b52",
                size=2191079936,
            ),
            IMAGENET_CLASSNAMES,
        ),
    ),
)

BY_NAME: dict[str, Dataset] = {d.name: d for d in DATASETS}

COOP_FEWSHOT = (
    "coop-imagenet",
    "coop-caltech101",
    "coop-oxford-pets",
    "coop-stanford-cars",
    "coop-oxford-flowers",
    "coop-food101",
    "coop-fgvc-aircraft",
    "coop-sun397",
    "coop-dtd",
    "coop-eurosat",
    "coop-ucf101",
)
GROUPS: dict[str, tuple[str, ...]] = {
    "dyml": ("dyml-vehicle", "dyml-animal", "dyml-product"),
    "coop": (*COOP_FEWSHOT, "imagenet-v2", "imagenet-sketch", "imagenet-a", "imagenet-r", "imagenet-ood"),
    "heat": ("cifar10", "cifar100", "svhn", "dtd", "places365", "lsun", "tinyimagenet", "imagenet", "imagenet-ood"),
}


def needs_hands(d: Dataset) -> bool:
    """``d`` or a dataset it requires must be fetched by hand."""
    return d.is_manual or any(needs_hands(BY_NAME[r]) for r in d.requires)


GROUPS["all-public"] = tuple(d.name for d in DATASETS if not needs_hands(d))


def resolve(names: list[str] | tuple[str, ...]) -> list[Dataset]:
    """Datasets for ``names`` (dataset or group names), each once, in the order given."""
    out: list[Dataset] = []
    for n in names:
        if n in GROUPS:
            out += [BY_NAME[m] for m in GROUPS[n]]
        elif n in BY_NAME:
            out.append(BY_NAME[n])
        else:
            raise KeyError(
                f"unknown dataset {n!r}; choose one of {sorted(BY_NAME)} or a group {sorted(GROUPS)} "
                f"(`make help` lists the data-* targets)"
            )
    seen: set[str] = set()
    return [d for d in out if not (d.name in seen or seen.add(d.name))]
