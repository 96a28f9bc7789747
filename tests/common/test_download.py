"""The download / verify / extract path of ``make data-*`` (common/data/download.py), offline: archives built here in
the official layouts are served from a loopback HTTP server (or file:// URLs), with checksums of those archives in
place of the published ones."""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import tarfile
import threading
import zipfile
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from common.data import catalogue, download
from common.data.catalogue import BY_NAME, NO_CHECKSUM
from common.data.datasets.cifar import load_cifar
from common.data.datasets.imagenet_ood import ImageNetVal
from common.data.datasets.inshop import InShop
from tests.common.test_datasets_inshop import make_inshop
from tests.conftest import ROOT, make_tiny_fashion_mnist
from tests.heat.test_readers import _cifar_batch


# --------------------------------------------------------------------------------------------------------------------
# a loopback server: files by path, each request can be told to truncate or to answer with a web page
# --------------------------------------------------------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):  # noqa: N802 (http.server API)
        srv = self.server
        srv.hits.append((self.path, self.headers.get("Range")))
        body = srv.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        mode = srv.modes.get(self.path, []).pop(0) if srv.modes.get(self.path) else None
        start = 0
        rng = self.headers.get("Range")
        if srv.ranges and rng:
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", "text/html" if mode == "html" else "application/octet-stream")
        self.send_header("Content-Length", str(len(body) - start))
        if srv.ranges:
            self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        data = body[start:]
        self.wfile.write(data[: len(data) // 2] if mode == "truncate" else data)
        if mode == "truncate":
            self.close_connection = True


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.modes, srv.hits, srv.ranges = {}, {}, [], False
    srv.url = lambda path: f"http://127.0.0.1:{srv.server_address[1]}{path}"
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


# --------------------------------------------------------------------------------------------------------------------
# archives in the official layouts
# --------------------------------------------------------------------------------------------------------------------
def _tree_bytes(root: Path, top: str, kind: str) -> bytes:
    """Pack ``root/top`` as ``kind`` ("zip", "tar", "tar.gz"), member names starting with ``top/``."""
    buf = io.BytesIO()
    files = sorted(p for p in (root / top).rglob("*") if p.is_file())
    if kind == "zip":
        with zipfile.ZipFile(buf, "w") as zf:
            for p in files:
                zf.write(p, p.relative_to(root).as_posix())
    else:
        with tarfile.open(fileobj=buf, mode="w:gz" if kind == "tar.gz" else "w") as tf:
            tf.add(root / top, arcname=top)
    return buf.getvalue()


def _cifar10_archive(tmp: Path, kind: str) -> bytes:
    base = tmp / "src" / "cifar-10-batches-py"
    for i in range(1, 6):
        _cifar_batch(base / f"data_batch_{i}", 2, [i, i], seed=i)
    _cifar_batch(base / "test_batch", 3, [7, 8, 9])
    return _tree_bytes(tmp / "src", "cifar-10-batches-py", kind)


def _md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


def _cifar10(url: str, kind: str, md5: str | None):
    """The catalogue's CIFAR-10 entry, served from ``url`` with the test archive's checksum."""
    ds = BY_NAME["cifar10"]
    checksum_from = NO_CHECKSUM if md5 is None else "this test"
    src = replace(ds.sources[0], filename=f"cifar-10-python.{kind}", urls=(url,), md5=md5, checksum_from=checksum_from)
    return replace(ds, sources=(src,))


def _leftovers(data_dir: Path) -> list[str]:
    """Everything under ``data_dir`` except an empty .downloads folder."""
    return sorted(
        str(p.relative_to(data_dir))
        for p in data_dir.rglob("*")
        if not (p.name == download.DOWNLOADS and p.is_dir() and not any(p.iterdir()))
    )


# --------------------------------------------------------------------------------------------------------------------
# download, verify, extract
# --------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["zip", "tar", "tar.gz"])
def test_download_checks_extracts_and_a_second_run_does_nothing(tmp_path, server, kind):
    blob = _cifar10_archive(tmp_path, kind)
    server.files["/c"] = blob
    ds, data = _cifar10(server.url("/c"), kind, _md5(blob)), tmp_path / "data"
    download.prepare(ds, data)
    x, y = load_cifar(data, "cifar10", "test")
    assert y.tolist() == [7, 8, 9] and x.shape == (3, 32, 32, 3)
    assert _leftovers(data) == ["cifar-10-batches-py"] + [
        f"cifar-10-batches-py/{f}" for f in sorted([*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"])
    ]  # archive deleted, no temporary folder
    stamp = (data / "cifar-10-batches-py" / "test_batch").stat().st_mtime_ns
    download.prepare(ds, data)
    assert len(server.hits) == 1  # the second run downloads nothing
    assert (data / "cifar-10-batches-py" / "test_batch").stat().st_mtime_ns == stamp


def test_keep_archives_and_file_urls(tmp_path):
    blob = _cifar10_archive(tmp_path, "tar.gz")
    (tmp_path / "mirror").mkdir()
    (tmp_path / "mirror" / "c.tar.gz").write_bytes(blob)
    ds, data = _cifar10((tmp_path / "mirror" / "c.tar.gz").as_uri(), "tar.gz", _md5(blob)), tmp_path / "data"
    download.prepare(ds, data, keep_archives=True)
    assert (data / ".downloads" / "cifar-10-python.tar.gz").read_bytes() == blob
    assert not download.verify(ds, data)


def test_checksum_mismatch_is_an_error_and_leaves_nothing(tmp_path, server):
    blob = _cifar10_archive(tmp_path, "tar.gz")
    server.files["/c"] = blob
    data = tmp_path / "data"
    with pytest.raises(download.ChecksumError, match=r"md5 \w+ differs from the published 0{32}.*checksum from"):
        download.prepare(_cifar10(server.url("/c"), "tar.gz", "0" * 32), data)
    assert _leftovers(data) == []


def test_truncated_download_is_an_error_and_leaves_nothing(tmp_path, server):
    blob = _cifar10_archive(tmp_path, "tar.gz")
    server.files["/c"], server.modes["/c"] = blob, ["truncate"]
    ds, data = _cifar10(server.url("/c"), "tar.gz", _md5(blob)), tmp_path / "data"
    with pytest.raises(
        download.DownloadError, match=rf"stopped after {len(blob) // 2} of {len(blob)} bytes.*starts over"
    ):
        download.prepare(ds, data)
    assert _leftovers(data) == []  # this server cannot resume, so not even a .part file
    download.prepare(ds, data)  # the next run starts over and succeeds
    assert not download.verify(ds, data)


def test_interrupted_download_resumes_where_it_stopped(tmp_path, server):
    blob = _cifar10_archive(tmp_path, "tar.gz")
    server.files["/c"], server.modes["/c"], server.ranges = blob, ["truncate"], True
    ds, data = _cifar10(server.url("/c"), "tar.gz", _md5(blob)), tmp_path / "data"
    with pytest.raises(download.DownloadError, match="resumes from there"):
        download.prepare(ds, data)
    assert _leftovers(data) == [".downloads", ".downloads/cifar-10-python.tar.gz.part"]  # no extracted data
    assert (data / ".downloads" / "cifar-10-python.tar.gz.part").stat().st_size == len(blob) // 2
    download.prepare(ds, data)
    assert server.hits[-1] == ("/c", f"bytes={len(blob) // 2}-")  # asked for the rest only
    assert not download.verify(ds, data) and not (data / ".downloads" / "cifar-10-python.tar.gz.part").exists()


def test_mirrors_are_tried_in_order_and_a_web_page_is_not_a_file(tmp_path, server):
    blob = _cifar10_archive(tmp_path, "tar.gz")
    server.files["/login"], server.modes["/login"] = b"<html>sign in</html>", ["html"]
    server.files["/c"], server.files["/old"] = blob, blob[:-1] + b"x"  # /old serves another version
    ds = _cifar10(server.url("/login"), "tar.gz", _md5(blob))
    urls = tuple(server.url(p) for p in ("/login", "/gone", "/old", "/c"))
    ds = replace(ds, sources=(replace(ds.sources[0], urls=urls),))
    download.prepare(ds, tmp_path / "data")
    assert [h[0] for h in server.hits] == ["/login", "/gone", "/old", "/c"]
    bad = replace(ds, sources=(replace(ds.sources[0], urls=(server.url("/login"), server.url("/gone"))),))
    server.modes["/login"] = ["html"]
    with pytest.raises(download.DownloadError, match=r"(?s)web page instead of the file.*cannot open .*/gone.*404"):
        download.prepare(bad, tmp_path / "other")
    assert _leftovers(tmp_path / "other") == []


def test_corrupt_archive_without_published_checksum_is_deleted(tmp_path, server):
    server.files["/c"] = _cifar10_archive(tmp_path, "tar.gz")[:-200]  # cut: gzip stream ends early
    data = tmp_path / "data"
    with pytest.raises(download.DataError, match="cannot extract .*corrupt or truncated"):
        download.prepare(_cifar10(server.url("/c"), "tar.gz", None), data)
    assert _leftovers(data) == []


def test_archive_without_the_expected_folder(tmp_path, server):
    (tmp_path / "src" / "other").mkdir(parents=True)
    (tmp_path / "src" / "other" / "x.txt").write_text("x")
    blob = _tree_bytes(tmp_path / "src", "other", "zip")
    server.files["/c"] = blob
    data = tmp_path / "data"
    with pytest.raises(download.LayoutError, match=r"holds no 'cifar-10-batches-py' \(top level: \['other'\]\)"):
        download.prepare(_cifar10(server.url("/c"), "zip", _md5(blob)), data)
    assert _leftovers(data) == [".downloads", ".downloads/cifar-10-python.zip"]  # verified, kept; nothing extracted


def test_a_folder_left_by_an_earlier_attempt_is_named(tmp_path, server):
    (tmp_path / "data" / "cifar-10-batches-py").mkdir(parents=True)
    with pytest.raises(download.LayoutError, match="(?s)missing .*cifar-10-batches-py/data_batch_1.*move it away"):
        download.prepare(_cifar10(server.url("/c"), "zip", "0" * 32), tmp_path / "data")
    assert server.hits == []


def _git_blob_id(path: Path) -> str:
    """The blob id as git computes it (the independent oracle for the git_sha1 checksum)."""
    return subprocess.run(["git", "hash-object", str(path)], capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git for the blob id")
def test_split_file_with_git_blob_checksum_and_a_link_to_the_shared_dtd(tmp_path, server):
    from tests.common.test_download_catalogue import BUILDERS
    from tests.gallop.test_data import ROWS, _write_coop

    data = tmp_path / "data"
    BUILDERS["dtd"](data)  # the DTD of `make data-dtd` is there: coop-dtd links to it
    _write_coop(tmp_path / "src", "dtd", {k: [("banded/banded_0.jpg", 0, "banded")] for k in ROWS})
    split = tmp_path / "src" / "dtd" / "split_zhou_DescribableTextures.json"
    server.files["/split.json"] = split.read_bytes()
    ds = BY_NAME["coop-dtd"]
    bad = replace(ds, sources=(replace(ds.sources[0], urls=(server.url("/split.json"),), git_sha1="1" * 40),))
    with pytest.raises(download.ChecksumError, match="git_sha1"):
        download.prepare(bad, data)
    good = replace(bad, sources=(replace(bad.sources[0], git_sha1=_git_blob_id(split)),))
    download.prepare(good, data)
    link = data / "coop" / "dtd" / "images"
    assert link.is_symlink() and Path(link.readlink()).as_posix() == "../../dtd/images"  # relative: DATA_DIR may move
    assert not download.verify(good, data)


def test_inner_archive_is_unpacked_in_place(tmp_path, server):
    """Caltech-101's zip holds 101_ObjectCategories.tar.gz."""
    inner_root = tmp_path / "inner"
    for c in ("accordion", "ant"):
        (inner_root / "101_ObjectCategories" / c).mkdir(parents=True)
        Image.new("RGB", (4, 4)).save(inner_root / "101_ObjectCategories" / c / "image_0001.jpg")
    (tmp_path / "outer" / "caltech-101").mkdir(parents=True)
    (tmp_path / "outer" / "caltech-101" / "101_ObjectCategories.tar.gz").write_bytes(
        _tree_bytes(inner_root, "101_ObjectCategories", "tar.gz")
    )
    blob = _tree_bytes(tmp_path / "outer", "caltech-101", "zip")
    server.files["/caltech.zip"] = blob
    ds = BY_NAME["coop-caltech101"]
    src = replace(ds.sources[0], urls=(server.url("/caltech.zip"),), md5=_md5(blob))
    download.install_source(src, ds, tmp_path / "data")
    assert sorted(p.name for p in (tmp_path / "data" / "coop" / "caltech-101" / "101_ObjectCategories").iterdir()) == [
        "accordion",
        "ant",
    ]


# --------------------------------------------------------------------------------------------------------------------
# manual datasets, Debian, converters
# --------------------------------------------------------------------------------------------------------------------
def test_manual_dataset_says_what_to_fetch_then_installs_what_was_put_there(tmp_path):
    data = tmp_path / "da ta"  # DATA_DIR may contain spaces
    ds = BY_NAME["inshop"]
    with pytest.raises(download.ManualStepError) as e:
        download.prepare(ds, data)
    msg = str(e.value)
    assert "Img/img.zip" in msg and f"'{data / '.downloads'}'" in msg and "Still missing" in msg
    assert "img.zip' is missing" in msg and f"missing {data / 'inshop' / 'list_eval_partition.txt'}" in msg
    # the user puts the two files in .downloads/ as told
    (tmp_path / "src").mkdir()
    make_inshop(tmp_path / "src")
    with zipfile.ZipFile(data / ".downloads" / "img.zip", "w") as zf:
        for p in sorted((tmp_path / "src" / "img").rglob("*.jpg")):
            zf.write(p, p.relative_to(tmp_path / "src").as_posix())
    shutil.copy(tmp_path / "src" / "list_eval_partition.txt", data / ".downloads")
    download.prepare(ds, data)
    assert InShop(data / "inshop", "gallery").labels.tolist() == [10, 11]
    assert (data / ".downloads" / "img.zip").exists()  # what a person put there is never deleted
    download.prepare(ds, data)  # and now it is a no-op


def test_manual_dataset_without_download_is_only_checked(tmp_path, capsys):
    from tests.common.test_datasets_dyml import _write_vehicle

    with pytest.raises(download.ManualStepError, match="(?s)OneDrive.*missing .*dyml_vehicle/train/label.csv"):
        download.prepare(BY_NAME["dyml-vehicle"], tmp_path)
    _write_vehicle(tmp_path / "dyml_vehicle")
    download.prepare(BY_NAME["dyml-vehicle"], tmp_path)
    assert "[ok] dyml-vehicle: already in place" in capsys.readouterr().err


def test_fashion_mnist_from_the_debian_package_else_downloaded(tmp_path, server, monkeypatch):
    pkg = make_tiny_fashion_mnist(tmp_path / "usr" / "share" / "datasets" / "fashion-mnist")
    monkeypatch.setattr(download, "debian_files", lambda name, allow_apt=True: sorted(pkg.iterdir()))
    ds = BY_NAME["fashion-mnist"]
    download.prepare(ds, tmp_path / "a")
    assert sorted(p.name for p in (tmp_path / "a" / "fashion-mnist").iterdir()) == sorted(p.name for p in pkg.iterdir())
    # no Debian package: the four files come from the mirror, each checked against its md5
    monkeypatch.setattr(download, "debian_files", lambda name, allow_apt=True: [])
    sources = []
    for src in ds.sources:
        body = (pkg / src.filename).read_bytes()
        server.files[f"/{src.filename}"] = body
        sources.append(replace(src, urls=(server.url(f"/{src.filename}"),), md5=_md5(body)))
    download.prepare(replace(ds, sources=tuple(sources)), tmp_path / "b")
    assert len(server.hits) == 4 and not download.verify(ds, tmp_path / "b")


def test_debian_files_lists_an_installed_package():
    if (
        shutil.which("dpkg") is None
        or subprocess.run(["dpkg", "-s", "dataset-fashion-mnist"], capture_output=True).returncode
    ):
        pytest.skip("dataset-fashion-mnist is not installed here")
    names = {p.name for p in download.debian_files("dataset-fashion-mnist", allow_apt=False)}
    assert {s.filename for s in BY_NAME["fashion-mnist"].sources} <= names


def test_lsun_val_lmdb_is_exported_to_image_files(tmp_path, server):
    lmdb = pytest.importorskip("lmdb")
    db = tmp_path / "src" / "bedroom_val_lmdb"
    images = {}
    for i, fmt in enumerate(("WEBP", "JPEG", "PNG")):
        buf = io.BytesIO()
        Image.new("RGB", (5, 4), (i * 50, 0, 0)).save(buf, format=fmt)
        images[f"{i:040x}"] = buf.getvalue()
    db.parent.mkdir()
    env = lmdb.open(str(db), map_size=1 << 20)
    with env.begin(write=True) as txn:
        for k, v in images.items():
            txn.put(k.encode(), v)
    env.close()
    blob = _tree_bytes(tmp_path / "src", "bedroom_val_lmdb", "zip")
    server.files["/b.zip"] = blob
    ds = BY_NAME["lsun"]
    src = replace(ds.sources[0], urls=(server.url("/b.zip"),), sha256=hashlib.sha256(blob).hexdigest(), size=len(blob))
    download.prepare(replace(ds, sources=(src,), layout=("LSUN/bedroom",)), tmp_path / "data")
    out = tmp_path / "data" / "LSUN" / "bedroom"
    assert {p.name: p.read_bytes() for p in out.iterdir()} == {
        f"{k}{ext}": v for (k, v), ext in zip(images.items(), (".webp", ".jpg", ".png"))
    }


def test_imagenet_from_the_official_tars(tmp_path):
    data, dl = tmp_path / "data", tmp_path / "data" / ".downloads"
    src = tmp_path / "src"
    # train: one tar per class, inside one tar
    (src / "train_tars").mkdir(parents=True)
    for w in ("n01", "n02"):
        (src / "train" / w).mkdir(parents=True)
        Image.new("RGB", (4, 4)).save(src / "train" / w / f"{w}_1.JPEG")
        with tarfile.open(src / "train_tars" / f"{w}.tar", "w") as tf:
            tf.add(src / "train" / w / f"{w}_1.JPEG", arcname=f"{w}_1.JPEG")
    dl.mkdir(parents=True)
    with tarfile.open(dl / "ILSVRC2012_img_train.tar", "w") as tf:
        for t in sorted((src / "train_tars").iterdir()):
            tf.add(t, arcname=t.name)
    # val: flat images + the devkit's ground truth (ILSVRC2012_ID per image) and meta.mat (ID -> wnid)
    (src / "val").mkdir()
    for i in (1, 2, 3):
        Image.new("RGB", (4, 4), (i, 0, 0)).save(src / "val" / f"ILSVRC2012_val_{i:08d}.JPEG")
    with tarfile.open(dl / "ILSVRC2012_img_val.tar", "w") as tf:
        for p in sorted((src / "val").iterdir()):
            tf.add(p, arcname=p.name)
    kit = src / "ILSVRC2012_devkit_t12" / "data"
    kit.mkdir(parents=True)
    synsets = np.array(
        [(1, "n02", 0), (2, "n01", 0), (1001, "n99", 2)],
        dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("num_children", "O")],
    )
    savemat(kit / "meta.mat", {"synsets": synsets})
    (kit / "ILSVRC2012_validation_ground_truth.txt").write_text("2\n1\n2\n")
    with tarfile.open(dl / "ILSVRC2012_devkit_t12.tar.gz", "w:gz") as tf:
        tf.add(src / "ILSVRC2012_devkit_t12", arcname="ILSVRC2012_devkit_t12")
    ds = BY_NAME["imagenet"]
    sums = {s.filename: _md5((dl / s.filename).read_bytes()) for s in ds.sources}
    ds = replace(ds, sources=tuple(replace(s, md5=sums[s.filename]) for s in ds.sources))
    download.prepare(ds, data)
    val = ImageNetVal(data)
    assert val.wnids == ["n01", "n02"]
    # images 1 and 3 are ID 2 = n01 (label 0), image 2 is ID 1 = n02 (label 1)
    assert [Path(p).name for p in val.paths] == [
        "ILSVRC2012_val_00000001.JPEG",
        "ILSVRC2012_val_00000003.JPEG",
        "ILSVRC2012_val_00000002.JPEG",
    ]
    assert val.labels.tolist() == [0, 0, 1]
    assert sorted(p.name for p in (data / "imagenet" / "train" / "n02").iterdir()) == ["n02_1.JPEG"]
    assert sorted(p.name for p in dl.iterdir()) == sorted(sums)  # the tars put there by hand stay
    wrong = replace(ds, sources=(replace(ds.sources[0], md5="f" * 32),))
    shutil.rmtree(data / "imagenet")
    with pytest.raises(download.ChecksumError, match="Delete '.*ILSVRC2012_devkit_t12.tar.gz'"):
        download.prepare(wrong, data)


# --------------------------------------------------------------------------------------------------------------------
# checksums published per file at a URL, archives merged into shared folders (GLDv2), COCO
# --------------------------------------------------------------------------------------------------------------------
def test_parse_md5_file():
    d1, d2 = "0123456789abcdef0123456789abcdef", "f" * 32
    assert download.parse_md5_file(f"{d1}  images_000.tar\n", "images_000.tar", "x") == d1
    assert download.parse_md5_file(f"{d1.upper()} *./sub/images_000.tar\n", "images_000.tar", "x") == d1
    assert download.parse_md5_file(f"{d1}\n", "images_000.tar", "x") == d1  # the digest alone
    assert download.parse_md5_file(f"{d2}  a.tar\n{d1}  b.tar\n", "b.tar", "x") == d1
    with pytest.raises(download.DownloadError, match=r"x gives no md5 for images_001.tar \(files listed: \['a.tar'\]"):
        download.parse_md5_file(f"{d1}  a.tar\n", "images_001.tar", "x")
    with pytest.raises(download.DownloadError, match="no md5 for a.tar.*none"):
        download.parse_md5_file("<Error><Code>AccessDenied</Code></Error>", "a.tar", "x")
    with pytest.raises(download.DownloadError, match="several md5s"):
        download.parse_md5_file(f"{d1}\n{d2}\n", "a.tar", "x")


def _gldv2_tars(tmp_path: Path, server) -> dict[str, list[bytes]]:
    """The tiny GLDv2 images as the official TARs (members ``a/b/c/<id>.jpg``, two train TARs sharing ``a/0/0/``),
    served with their md5 files at the bucket's paths."""
    from tests.helpers.gldv2_files import make_gldv2

    src = make_gldv2(tmp_path / "src" / "gldv2")
    tars: dict[str, list[bytes]] = {}
    for split in ("train", "index", "test"):
        files = sorted(p for p in (src / split).rglob("*.jpg"))
        parts = [files[::2], files[1::2]] if split == "train" else [files]
        for i, part in enumerate(parts):
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w") as tf:
                for f in part:
                    tf.add(f, arcname=f.relative_to(src / split).as_posix())
            tars.setdefault(split, []).append(buf.getvalue())
            server.files[f"/{split}/images_{i:03d}.tar"] = buf.getvalue()
            server.files[f"/md5sum/{split}/md5.images_{i:03d}.txt"] = (
                f"{_md5(buf.getvalue())}  images_{i:03d}.tar\n".encode()
            )
    for _, name in catalogue.GLDV2_METADATA:
        server.files[f"/meta/{name}"] = (src / name).read_bytes()
    return tars


def _gldv2_served(server, tars, monkeypatch):
    """The catalogue's two GLDv2 entries with the bucket replaced by the loopback server (and as many TARs per split
    as the tiny copy has); the metadata entry is patched where `make data-gldv2` finds it."""
    meta = BY_NAME["gldv2-metadata"]
    meta = replace(meta, sources=tuple(replace(s, urls=(server.url(f"/meta/{s.filename[6:]}"),)) for s in meta.sources))
    monkeypatch.setitem(download.BY_NAME, "gldv2-metadata", meta)
    bucket = server.url("")
    ds = BY_NAME["gldv2"]
    sources = tuple(
        replace(
            s, urls=(s.urls[0].replace(catalogue.GLDV2, bucket),), md5_url=s.md5_url.replace(catalogue.GLDV2, bucket)
        )
        for s in ds.sources
        if int(s.filename[-7:-4]) < len(tars[s.install[0][1].split("/")[1]])
    )
    return replace(ds, sources=sources)


def test_gldv2_from_the_bucket_md5_per_tar_merged_and_resumed(tmp_path, server, monkeypatch):
    from common.data.datasets.gldv2 import GLDv2Retrieval, GLDv2Train, load_retrieval_split
    from tests.helpers.gldv2_files import TRAIN

    tars = _gldv2_tars(tmp_path, server)
    ds = _gldv2_served(server, tars, monkeypatch)
    assert [s.filename for s in ds.sources] == [
        "gldv2_train_images_000.tar",
        "gldv2_train_images_001.tar",
        "gldv2_index_images_000.tar",
        "gldv2_test_images_000.tar",
    ]
    data = tmp_path / "data"
    server.modes["/train/images_001.tar"] = ["truncate"]  # the second TAR breaks off the first time
    with pytest.raises(download.DownloadError, match="images_001.tar stopped after"):
        download.prepare(ds, data)
    assert (data / "gldv2" / "train" / ".extracted" / "gldv2_train_images_000.tar").is_file()
    assert not (data / "gldv2" / "train" / ".extracted" / "gldv2_train_images_001.tar").exists()
    server.hits.clear()
    load_retrieval_split.cache_clear()
    download.prepare(ds, data)
    # the metadata is there and the first TAR was extracted: only the second one and the rest are fetched, and the
    # md5 of the second one, read before it broke off, was kept (each md5 file is read once)
    assert [h[0] for h in server.hits] == [
        "/train/images_001.tar",
        "/md5sum/index/md5.images_000.txt",
        "/index/images_000.tar",
        "/md5sum/test/md5.images_000.txt",
        "/test/images_000.tar",
    ]
    train = GLDv2Train(data / "gldv2", check_files=True)
    assert sorted(train.image_ids) == sorted(i for _, ids, _ in TRAIN.values() for i in ids)
    assert len(GLDv2Retrieval(data / "gldv2", "index", check_files=True)) == 6
    assert sorted(p.name for p in (data / "gldv2" / "train" / "a" / "0" / "0").iterdir()) == [
        "a0000001.jpg",
        "a0000002.jpg",
    ]  # one folder filled by both train TARs
    assert sorted(p.name for p in (data / ".downloads").iterdir()) == []  # TARs and their md5 deleted
    server.hits.clear()
    download.prepare(ds, data)
    assert server.hits == []  # ready: a second run only checks


def test_gldv2_tar_against_the_md5_published_beside_it(tmp_path, server, monkeypatch):
    tars = _gldv2_tars(tmp_path, server)
    ds = _gldv2_served(server, tars, monkeypatch)
    data = tmp_path / "data"
    server.files["/md5sum/index/md5.images_000.txt"] = f"{'0' * 32}  images_000.tar\n".encode()
    with pytest.raises(
        download.ChecksumError, match=r"gldv2_index_images_000.tar .*md5 \w+ differs from the published 0{32}.*md5sum"
    ):
        download.prepare(ds, data)
    assert not (data / "gldv2" / "index").exists() and not (data / ".downloads" / "gldv2_index_images_000.tar").exists()
    # the md5 file is gone: the error names the URL and where the text can go instead
    del server.files["/md5sum/test/md5.images_000.txt"]
    with pytest.raises(download.DownloadError, match=r"(?s)cannot read the published md5 .*404.*put that file's text"):
        download.install_source(ds.sources[-1], ds, data)
    (data / ".downloads" / "gldv2_test_images_000.tar.md5").write_text(f"{_md5(tars['test'][0])}  images_000.tar\n")
    download.install_source(ds.sources[-1], ds, data)  # offline, from the md5 put there by hand
    assert (data / "gldv2" / "test" / ".extracted" / "gldv2_test_images_000.tar").is_file()


def test_coco_zips_are_laid_out_for_every_reader(tmp_path, server):
    from common.data.datasets.coco_multilabel import COCOMultiLabel
    from tests.helpers.coco_files import make_coco

    src = make_coco(tmp_path / "src")
    ds = BY_NAME["coco"]
    sources = []
    for s, top in zip(ds.sources, ("train2017", "val2017", "annotations")):
        server.files[f"/{s.filename}"] = _tree_bytes(src, top, "zip")
        sources.append(replace(s, urls=(server.url(f"/{s.filename}"),)))
    ds = replace(ds, sources=tuple(sources))
    download.prepare(ds, tmp_path / "data")
    assert not download.verify(ds, tmp_path / "data")
    val = COCOMultiLabel(tmp_path / "data" / "coco", split="val", protocol="official")
    assert val.image_ids.tolist() == [30, 33] and val.labels.shape == (2, 3)


# --------------------------------------------------------------------------------------------------------------------
# CLI and make
# --------------------------------------------------------------------------------------------------------------------
def test_cli_reports_what_is_not_ready_and_exits_non_zero(tmp_path, capsys):
    assert download.main(["dyml-product", "--data-dir", str(tmp_path)]) == 1
    assert "not ready: dyml-product" in capsys.readouterr().err
    assert download.main(["nope", "--data-dir", str(tmp_path)]) == 2
    assert download.main(["--list", "--data-dir", str(tmp_path)]) == 0
    assert "data-dyml-product" in capsys.readouterr().out


def test_make_target_runs_the_cli_with_a_data_dir_holding_spaces(tmp_path):
    from tests.common.test_download_catalogue import BUILDERS

    data = tmp_path / "my data"
    BUILDERS["dtd"](data)
    r = subprocess.run(
        ["make", "-s", "-o", ".venv/.installed", "data-dtd", f"DATA_DIR={data}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert f"[ok] dtd: already in place under {data}" in r.stderr


def _tiny_clip_weights(weights_dir: Path, tag: str) -> None:
    """A random-init ``tiny_clip`` in the folder ``make weights-clip`` writes (config + weights), so the target
    finds its weights and downloads nothing."""
    import json

    import open_clip
    from safetensors.torch import save_file

    from common.backbones.clip import build_clip, register_configs, tag_dir

    register_configs()
    model, _ = build_clip("tiny_clip", seed=1)
    out = tag_dir(weights_dir, "tiny_clip", tag)
    out.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "open_clip_model.safetensors"))
    cfg = open_clip.get_model_config("tiny_clip")
    pre = {"size": cfg["vision_cfg"]["image_size"]}
    (out / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": pre}))


@pytest.mark.slow  # ~35 s: three Python processes, two builds through a tiny CLIP
def test_make_data_hgldv2_builds_the_train_and_index_hierarchies_the_config_reads(tmp_path):
    """`make data-hgldv2` checks the GLDv2 metadata (here in place), finds the CLIP weights, runs the builder for
    both splits, and its outputs are the files configs/data/hgldv2.yaml names."""
    import yaml

    from common.data.datasets.gldv2 import GLDv2Retrieval, GLDv2Train
    from tests.common.test_download_catalogue import BUILDERS

    data, weights = tmp_path / "da ta", tmp_path / "weights"
    BUILDERS["gldv2-metadata"](data)  # the target needs the CSVs only
    _tiny_clip_weights(weights, "t1")
    r = subprocess.run(
        [
            "make",
            "-s",
            "-o",
            ".venv/.installed",
            "data-hgldv2",
            f"DATA_DIR={data}",
            f"WEIGHTS_DIR={weights}",
            "HGLDV2_MODEL=tiny_clip",
            "HGLDV2_TAG=t1",
            "HGLDV2_ARGS=--device cpu --num-workers 0",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "[ok] gldv2-metadata: already in place" in r.stderr
    cfg = yaml.safe_load((ROOT / "configs" / "data" / "hgldv2.yaml").read_text())
    train_csv, index_csv = cfg["train_dataset"]["hierarchy"], cfg["query_dataset"]["hierarchy"]
    gld = data / "gldv2"
    assert (gld / train_csv).is_file() and (gld / index_csv).is_file()
    assert len(GLDv2Train(gld, hierarchy=train_csv).class_ids) == 2  # [landmark, super-category]
    assert GLDv2Retrieval(gld, "index", hierarchy=index_csv).labels.ndim == 2


def test_make_data_hgldv2_recipe_order(tmp_path):
    """Dry run: check the metadata, fetch the default CLIP weights unless they are there, then build train and index
    into DATA_DIR/gldv2 (the slow test above runs it)."""
    r = subprocess.run(
        [
            "make",
            "-n",
            "-o",
            ".venv/.installed",
            "data-hgldv2",
            f"DATA_DIR={tmp_path}/d d",
            f"WEIGHTS_DIR={tmp_path}/w",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    out = r.stdout
    steps = [
        "common.data.download",
        f'test -f "{tmp_path}/w/open_clip/ViT-B-16-openai/open_clip_config.json"',
        "common.backbones.weights",
        "for split in train index",
        f'happier.hgldv2 build --split $split --root "{tmp_path}/d d/gldv2"',
    ]
    assert all(x in out for x in steps), out
    assert [out.index(x) for x in steps] == sorted(out.index(x) for x in steps)
    assert "gldv2-metadata" in out.splitlines()[0]
