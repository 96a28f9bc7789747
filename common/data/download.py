"""Fetch, check and lay out the datasets of :mod:`common.data.catalogue` (the CLI behind ``make data-<name>``).

``python -m common.data.download NAME [NAME ...] --data-dir DIR`` (NAME: a dataset or a group of the catalogue) does,
for each dataset:

1. **check** the layout (every ``layout`` path exists, folders are not empty) and construct each reader of the entry
   on it; if that passes, nothing else happens (a second run is a no-op);
2. for Fashion-MNIST, copy the files of Debian's ``dataset-fashion-mnist`` package when it is (or can be) installed;
3. prepare the datasets it ``requires`` (a no-op when they are ready);
4. **download** each source to ``DIR/.downloads/<file>.part`` (resumed when the server allows ranges), check the size
   and the published checksum (md5, sha256, git blob sha1, or an md5 read from the URL where it is published) while
   streaming, and only then rename it to ``<file>``; a source without URL must be put there by hand (the entry's
   instructions say how);
5. **extract** into a fresh ``DIR/.tmp-<name>-*`` folder, unpack inner archives, run the entry's converter
   (LSUN lmdb export, ImageNet train/val sorting), then move each installed folder into place with one ``rename``
   (atomic on one filesystem) and delete the temporary folder, whatever happened. Archives that share folders
   (GLDv2's TARs) are merged into them instead, and a stamp marks each archive done;
6. make the entry's links (one DTD serves HEAT, MOS Textures and CoOp) and **check** again.

An interrupted or corrupt download raises an error that names the file and the fix, and leaves no half-extracted
folder: nothing under the dataset's destination exists until its archive was verified and fully extracted. (A merged
archive interrupted while its files move in leaves some of them, but no stamp: the next run extracts it again.)
``--check`` only checks; ``--list`` prints every dataset with its state; ``--markdown`` prints the catalogue table
of docs/data.md.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import importlib
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from common.data.catalogue import BY_NAME, DATASETS, GROUPS, NO_CHECKSUM, Dataset, Source, needs_hands, resolve

CHUNK = 1 << 20
USER_AGENT = "robust-retrieval-data/1.0 (python urllib)"
DOWNLOADS = ".downloads"


class DataError(RuntimeError):
    """A dataset could not be fetched or is not laid out as its reader expects; the message says what to do."""


class DownloadError(DataError):
    """The transfer failed or stopped early."""


class ChecksumError(DataError):
    """The downloaded bytes are not the published file."""


class LayoutError(DataError):
    """Files are missing after installing, or a reader cannot load what is there."""


class ManualStepError(DataError):
    """Something must be fetched by hand (login, licence, no direct link); the message says what and where."""


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _progress(total: int | None, desc: str, unit: str = "B"):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, unit_scale=unit == "B", unit_divisor=1024, disable=None, leave=False)


# --------------------------------------------------------------------------------------------------------------------
# checksums
# --------------------------------------------------------------------------------------------------------------------
class Digest:
    """The published checksum of a source, fed chunk by chunk (``git_sha1`` hashes ``b"blob <size>\\0"`` first)."""

    def __init__(self, src: Source) -> None:
        self.kind, self.expected = next(
            ((k, v) for k, v in (("sha256", src.sha256), ("md5", src.md5), ("git_sha1", src.git_sha1)) if v),
            (None, None),
        )
        self.size = src.size
        self._h = None

    def start(self, total: int | None) -> None:
        """Reset; ``total`` (the file size) is needed up front for a git blob id."""
        if self.kind == "git_sha1":
            if total is None:
                raise DownloadError("the server did not send the file size, which a git blob checksum needs")
            self._h = hashlib.sha1(b"blob %d\0" % total)
        elif self.kind:
            self._h = hashlib.new(self.kind)

    def update(self, data: bytes) -> None:
        if self._h is not None:
            self._h.update(data)

    def check(self, nbytes: int, what: str) -> None:
        """Raise :class:`ChecksumError` when ``nbytes`` or the digest differ from the published ones."""
        if self.size is not None and nbytes != self.size:
            raise ChecksumError(f"{what}: {nbytes} bytes, the published size is {self.size}")
        if self._h is not None and self._h.hexdigest() != self.expected:
            raise ChecksumError(f"{what}: {self.kind} {self._h.hexdigest()} differs from the published {self.expected}")

    def check_file(self, path: Path) -> None:
        """Hash a whole file on disk (a file put by hand, or one left by an earlier run)."""
        n = path.stat().st_size
        if self.kind is None and self.size is None:
            return
        self.start(n)
        with open(path, "rb") as f, _progress(n, f"checking {path.name}") as bar:
            while chunk := f.read(CHUNK):
                self.update(chunk)
                bar.update(len(chunk))
        self.check(n, f"'{path}'")


def parse_md5_file(text: str, name: str, where: str) -> str:
    """The md5 of ``name`` in a published md5 file: ``md5sum`` lines (``<digest>  <name>``, ``<digest> *<name>``)
    or the digest alone. Raises :class:`DownloadError` when the text holds no digest, or none for ``name``."""
    found: dict[str | None, set[str]] = {}
    for line in text.splitlines():
        parts = line.strip().split(maxsplit=1)
        if parts and len(parts[0]) == 32 and all(c in "0123456789abcdefABCDEF" for c in parts[0]):
            listed = Path(parts[1].strip().lstrip("*")).name if len(parts) > 1 else None
            found.setdefault(listed, set()).add(parts[0].lower())
    digests = found.get(name, set()) | found.get(None, set())
    if len(digests) != 1:
        what = f"no md5 for {name}" if not digests else f"several md5s for {name}: {sorted(digests)}"
        listed = sorted(n for n in found if n) or "none"
        raise DownloadError(f"{where} gives {what} (files listed: {listed}); is it the published md5 file?")
    return digests.pop()


def _published_name(src: Source) -> str:
    """The file name the publisher uses (the last part of the first URL), which its md5 file lists."""
    return Path(urllib.parse.urlparse(src.urls[0]).path).name if src.urls else src.filename


def md5_cache(src: Source, downloads: Path) -> Path:
    """Where the md5 read from ``src.md5_url`` is kept, next to the download."""
    return downloads / f"{src.filename}.md5"


def with_published_md5(src: Source, downloads: Path) -> Source:
    """``src`` with ``md5`` read from ``src.md5_url`` (once: the text is kept in :func:`md5_cache`, so a later run,
    or an offline one given that file, reads it from there). Sources without ``md5_url`` are returned as they are."""
    if not src.md5_url or src.md5:
        return src
    cache = md5_cache(src, downloads)
    if cache.is_file():
        text, where = cache.read_text(errors="replace"), f"'{cache}'"
    else:
        try:
            req = urllib.request.Request(src.md5_url, headers={"User-Agent": USER_AGENT})
            with urllib.request.urlopen(req, timeout=60) as resp:
                text = resp.read(1 << 16).decode("utf-8", errors="replace")
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            raise DownloadError(
                f"cannot read the published md5 of {src.filename} from {src.md5_url}: {e}. Run the target again "
                f"where that URL can be reached, or put that file's text in '{cache}'."
            ) from e
        where = src.md5_url
    md5 = parse_md5_file(text, _published_name(src), where)
    if not cache.is_file():
        downloads.mkdir(parents=True, exist_ok=True)
        _write_atomic(cache, text.encode())
    return replace(src, md5=md5, checksum_from=f"{src.checksum_from}: {src.md5_url}")


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------------------------------
# download
# --------------------------------------------------------------------------------------------------------------------
def _stream(url: str, part: Path, digest: Digest) -> int:
    """Download ``url`` into ``part`` (appending when the server honours a range), feeding ``digest``.

    Returns the size of the complete file. Raises :class:`DownloadError` when the transfer fails or stops early;
    the ``.part`` file is kept only when the server supports ranges (the next run resumes it).
    """
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60)
    except (urllib.error.URLError, OSError) as e:
        raise DownloadError(f"cannot open {url}: {e}") from e
    with resp:
        resumed = offset > 0 and getattr(resp, "status", None) == 206
        if not resumed:
            offset = 0
        if resp.headers.get_content_type() == "text/html":
            part.unlink(missing_ok=True)
            raise DownloadError(
                f"{url} answered with a web page instead of the file (a login wall, a quota page or a moved file)"
            )
        length = resp.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        resumable = resumed or resp.headers.get("Accept-Ranges", "").lower() == "bytes"
        digest.start(total if total is not None else digest.size)
        if resumed:
            with open(part, "rb") as f:
                while chunk := f.read(CHUNK):
                    digest.update(chunk)
        written = offset
        try:
            with open(part, "ab" if resumed else "wb") as out, _progress(total, part.name[: -len(".part")]) as bar:
                bar.update(offset)
                while chunk := resp.read(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    written += len(chunk)
                    bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as e:
            raise _stopped(url, part, written, total, resumable, e) from e
        if total is not None and written != total:
            raise _stopped(url, part, written, total, resumable, None)
    return written


def _stopped(url: str, part: Path, written: int, total: int | None, resumable: bool, err) -> DownloadError:
    if not resumable:
        part.unlink(missing_ok=True)
    then = "it resumes from there" if resumable else "it starts over (this server cannot resume)"
    return DownloadError(
        f"the download of {url} stopped after {written} of {total if total is not None else '?'} bytes"
        f"{f' ({err})' if err else ''}. Run the same target again: {then}."
    )


def fetch(src: Source, downloads: Path) -> Path:
    """The verified file of ``src`` in ``downloads``: already there (checked), else downloaded from a mirror.

    Raises :class:`ManualStepError` for a source without URL that is not there, :class:`ChecksumError` when the
    bytes differ from the published checksum (the bad file is deleted), :class:`DownloadError` when every mirror
    failed.
    """
    final = downloads / src.filename
    if not final.is_file() and not src.urls:
        downloads.mkdir(parents=True, exist_ok=True)  # the folder the instructions point to
        raise ManualStepError(f"'{final}' is missing (it cannot be downloaded automatically)")
    src = with_published_md5(src, downloads)
    if final.is_file():
        try:
            Digest(src).check_file(final)
        except ChecksumError as e:
            raise ChecksumError(f"{e}. Delete '{final}' and run the target again.") from None
        return final
    downloads.mkdir(parents=True, exist_ok=True)
    part = downloads / f"{src.filename}.part"
    errors, mismatch = [], False
    for url in src.urls:  # the next mirror after a failure or a wrong file
        digest = Digest(src)
        say(f"  downloading {url}")
        try:
            n = _stream(url, part, digest)
            digest.check(n, f"{src.filename} from {url}")
        except ChecksumError as e:
            part.unlink(missing_ok=True)
            errors.append(f"{e} (checksum from {src.checksum_from}); the file was deleted")
            mismatch = True
            continue
        except DownloadError as e:
            errors.append(str(e))
            continue
        os.replace(part, final)
        return final
    if mismatch:
        errors.append(f"A mirror may serve another version: put the official file at '{final}' by hand and run again.")
        raise ChecksumError("\n".join(errors))
    raise DownloadError("\n".join(errors))


# --------------------------------------------------------------------------------------------------------------------
# extraction
# --------------------------------------------------------------------------------------------------------------------
def archive_kind(name: str) -> str | None:
    """``"zip"``, ``"tar"`` or ``None`` (a plain file) from the file name."""
    low = name.lower()
    if low.endswith(".zip"):
        return "zip"
    if low.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")):
        return "tar"
    return None


def _untar(tf: tarfile.TarFile, dest: Path, bar=None) -> None:
    """Extract every member of ``tf`` (read in order, so streams work) into ``dest``, refusing paths outside it."""
    safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python >= 3.10.12
    for m in tf:
        if not safe and (m.name.startswith("/") or ".." in Path(m.name).parts or m.issym() or m.islnk()):
            raise DataError(f"the archive holds a member outside its folder: {m.name}")
        tf.extract(m, dest, **safe)
        if bar is not None:
            bar.update(1)


def _corrupt(archive: Path, e: Exception) -> DataError:
    return DataError(
        f"cannot extract '{archive}': {e}. The file is corrupt or truncated: delete it and run the target again."
    )


def extract(archive: Path, dest: Path) -> None:
    """Unpack ``archive`` into ``dest`` (member paths outside ``dest`` are refused). Raises :class:`DataError` on a
    corrupt or truncated archive."""
    try:
        if archive_kind(archive.name) == "zip":
            with zipfile.ZipFile(archive) as zf:
                members = zf.infolist()
                with _progress(len(members), f"extracting {archive.name}", unit="file") as bar:
                    for m in members:
                        zf.extract(m, dest)
                        bar.update(1)
        else:
            with tarfile.open(archive, "r:*") as tf, _progress(None, f"extracting {archive.name}", unit="file") as bar:
                _untar(tf, dest, bar)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as e:
        raise _corrupt(archive, e) from e


def _install_file(file: Path, dst: Path, move: bool) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if move:
        os.replace(file, dst)
        return
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.copyfile(file, tmp)
    os.replace(tmp, dst)


EXTRACTED = ".extracted"


def merge_stamp(src: Source, data_dir: Path, dst: str) -> Path:
    """The file that marks ``src`` (a ``merge`` archive) as extracted into ``data_dir/dst``."""
    return data_dir / dst / EXTRACTED / src.filename


def _merge_tree(src: Path, dst: Path) -> None:
    """Move everything under ``src`` into ``dst``: a folder that ``dst`` lacks moves with one rename, one that it has
    is merged, a file replaces its namesake (left by an interrupted run of the same archive)."""
    dst.mkdir(parents=True, exist_ok=True)
    for p in src.iterdir():
        q = dst / p.name
        if p.is_dir() and not p.is_symlink() and q.is_dir():
            _merge_tree(p, q)
        else:
            os.replace(p, q)


def _installed(src: Source, data_dir: Path, ds: Dataset) -> bool:
    """Whether every part of ``src`` is in place (a merge archive: its stamps); a partial install is an error."""
    if src.merge:
        return all(merge_stamp(src, data_dir, dst).is_file() for _, dst in src.install)
    dsts = [data_dir / dst for _, dst in src.install]
    present = [d for d in dsts if d.exists()]
    if present and len(present) < len(dsts):
        raise LayoutError(
            f"{', '.join(map(str, present))} exist(s) but the rest of {src.filename} is missing: move the existing "
            f"folder away (or delete it) and run `make data-{ds.name}` again."
        )
    return bool(dsts) and len(present) == len(dsts)


def install_source(src: Source, ds: Dataset, data_dir: Path, keep_archives: bool = False) -> None:
    """Fetch ``src`` and move its parts into place under ``data_dir`` (skipped when they are all there)."""
    if _installed(src, data_dir, ds):
        return
    downloads = data_dir / DOWNLOADS
    file = fetch(src, downloads)
    if not src.install:
        return  # kept in .downloads for a converter (ImageNet devkit)
    ours = bool(src.urls)  # files put there by hand are never deleted or moved
    if archive_kind(src.filename) is None:
        for _, dst in src.install:
            _install_file(file, data_dir / dst, move=ours and not keep_archives)
    else:
        _extract_and_install(src, ds, file, data_dir, delete_bad=ours and src.checksum_from == NO_CHECKSUM)
    if ours and not keep_archives:
        file.unlink(missing_ok=True)
        md5_cache(src, downloads).unlink(missing_ok=True)


def _extract_and_install(src: Source, ds: Dataset, file: Path, data_dir: Path, delete_bad: bool) -> None:
    for stale in data_dir.glob(f".tmp-{ds.name}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{ds.name}-", dir=data_dir))
    try:
        try:
            (EXTRACTORS.get(src.convert) or extract)(file, tmp)
        except DataError:
            if delete_bad:
                file.unlink(missing_ok=True)
            raise
        for inner in src.inner:
            extract(tmp / inner, (tmp / inner).parent)
            (tmp / inner).unlink()
        if src.convert in CONVERTERS:
            CONVERTERS[src.convert](tmp, data_dir / DOWNLOADS)
        for rel, dst in src.install:
            if not (tmp / rel).exists():
                top = sorted(p.name for p in tmp.iterdir())[:10]
                raise LayoutError(f"{src.filename} holds no '{rel}' (top level: {top}); has the archive changed?")
            if src.merge:
                _merge_tree(tmp / rel, data_dir / dst)
                merge_stamp(src, data_dir, dst).parent.mkdir(exist_ok=True)
                merge_stamp(src, data_dir, dst).touch()
            else:
                (data_dir / dst).parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp / rel, data_dir / dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------------------------------------
# converters (run on the extracted tree before installing)
# --------------------------------------------------------------------------------------------------------------------
def _image_suffix(data: bytes) -> str:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    if data[:2] == b"\xff\xd8":
        return ".jpg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return ".png"
    raise DataError(f"an lmdb value is not a webp/jpeg/png image (starts with {data[:12]!r})")


def convert_lsun_lmdb(tmp: Path, downloads: Path) -> None:
    """Write every image of the one ``*_lmdb`` database in ``tmp`` to ``tmp/export/<key><ext>`` (bytes as stored)."""
    try:
        import lmdb
    except ImportError:
        raise DataError("LSUN ships as lmdb databases: `pip install lmdb` (in the dev extra), then run again") from None
    (db,) = [p for p in tmp.iterdir() if p.name.endswith("_lmdb")]
    out = tmp / "export"
    out.mkdir()
    env = lmdb.open(str(db), readonly=True, lock=False, readahead=False, max_readers=1)
    with env.begin() as txn, _progress(env.stat()["entries"], f"exporting {db.name}", unit="img") as bar:
        for key, value in txn.cursor():
            (out / (key.decode() + _image_suffix(value))).write_bytes(value)
            bar.update(1)
    env.close()


def extract_imagenet_train(archive: Path, tmp: Path) -> None:
    """``ILSVRC2012_img_train.tar`` holds one ``<wnid>.tar`` per class: stream each into ``tmp/train/<wnid>/``
    (the 1,000 inner tars never land on disk, so the peak space is the images once)."""
    n = 0
    try:
        with tarfile.open(archive) as outer, _progress(1000, "unpacking the train classes", unit="class") as bar:
            for m in outer:
                if m.isfile() and m.name.endswith(".tar"):
                    with tarfile.open(fileobj=outer.extractfile(m), mode="r|") as inner:
                        _untar(inner, tmp / "train" / Path(m.name).stem)
                    n += 1
                    bar.update(1)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise _corrupt(archive, e) from e
    if not n:
        raise DataError(f"'{archive}' holds no <wnid>.tar class archives: is it ILSVRC2012_img_train.tar?")


def convert_imagenet_val(tmp: Path, downloads: Path) -> None:
    """Sort the 50,000 flat val images into ``tmp/val/<wnid>/`` using the devkit (meta.mat + ground truth)."""
    import io

    from scipy.io import loadmat

    devkit = downloads / "ILSVRC2012_devkit_t12.tar.gz"
    with tarfile.open(devkit) as tf:
        names = {Path(m.name).name: m for m in tf.getmembers()}
        meta = loadmat(io.BytesIO(tf.extractfile(names["meta.mat"]).read()), squeeze_me=True)["synsets"]
        truth = tf.extractfile(names["ILSVRC2012_validation_ground_truth.txt"]).read().decode().split()
    wnid = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in meta if int(s["num_children"]) == 0}
    images = sorted(tmp.glob("ILSVRC2012_val_*.JPEG"))
    if len(images) != len(truth):
        raise DataError(f"the val tar holds {len(images)} images but the devkit labels {len(truth)}")
    for img, cls in zip(images, truth):
        folder = tmp / "val" / wnid[int(cls)]
        folder.mkdir(parents=True, exist_ok=True)
        os.replace(img, folder / img.name)


CONVERTERS: dict[str, Callable[[Path, Path], None]] = {  # (extracted tree, downloads folder), after extraction
    "lsun_lmdb": convert_lsun_lmdb,
    "imagenet_val": convert_imagenet_val,
}
EXTRACTORS: dict[str, Callable[[Path, Path], None]] = {  # (archive, tree), in place of the plain extraction
    "imagenet_train": extract_imagenet_train,
}


# --------------------------------------------------------------------------------------------------------------------
# Debian package route (Fashion-MNIST)
# --------------------------------------------------------------------------------------------------------------------
def debian_files(package: str, allow_apt: bool = True) -> list[Path]:
    """Files of an installed Debian package (``dpkg -L``), installing it with apt-get first when we are root."""

    def listed() -> list[Path]:
        if not shutil.which("dpkg"):
            return []
        r = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True)
        return [Path(x) for x in r.stdout.splitlines() if r.returncode == 0 and Path(x).is_file()]

    files = listed()
    if not files and allow_apt and shutil.which("apt-get") and hasattr(os, "geteuid") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-qq", package]
        if subprocess.run(install, capture_output=True, env=env).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env)
            subprocess.run(install, capture_output=True, env=env)
        files = listed()
    return files


def copy_from_debian(ds: Dataset, data_dir: Path, allow_apt: bool = True) -> bool:
    """Copy the files that ``ds`` installs from its Debian package; False when the package is not available."""
    wanted = {Path(dst).name: data_dir / dst for src in ds.sources for _, dst in src.install}
    found = {f.name: f for f in debian_files(ds.debian_package, allow_apt) if f.name in wanted}
    if set(found) != set(wanted):
        return False
    for name, f in found.items():
        if not wanted[name].exists():
            _install_file(f, wanted[name], move=False)
    say(f"  copied from Debian's {ds.debian_package} ({found[next(iter(found))].parent})")
    return True


# --------------------------------------------------------------------------------------------------------------------
# checking and preparing one dataset
# --------------------------------------------------------------------------------------------------------------------
def _import(target: str):
    module, _, name = target.rpartition(".")
    return getattr(importlib.import_module(module), name)


def verify(ds: Dataset, data_dir: Path) -> list[str]:
    """Problems with ``ds`` under ``data_dir`` (empty list = ready): :func:`layout_problems`, then (when the layout
    is complete) :func:`reader_problems`."""
    return layout_problems(ds, data_dir) or reader_problems(ds, data_dir)


def layout_problems(ds: Dataset, data_dir: Path) -> list[str]:
    """Every ``layout`` path must exist, and a folder must not be empty."""
    problems = []
    for rel in ds.layout:
        p = data_dir / rel
        if not p.exists():
            problems.append(f"missing {p}")
        elif p.is_dir() and next(p.iterdir(), None) is None:
            problems.append(f"empty folder {p}")
    return problems


def reader_problems(ds: Dataset, data_dir: Path) -> list[str]:
    """Each reader of ``ds`` constructed on ``data_dir`` must list items, and (unless its check says ``files=False``)
    the first and last listed files must exist (readers parse the split files; this catches images extracted to
    another place)."""
    problems = []
    for r in ds.readers:
        call = f"{r.target.rpartition('.')[2]}(root='{data_dir / r.root}', {r.kwargs})"
        try:
            obj = _import(r.target)(root=data_dir / r.root, **r.kwargs)
        except Exception as e:  # the reader's own error names the problem
            problems.append(f"{call} failed: {type(e).__name__}: {e}")
            continue
        if len(obj) == 0:
            problems.append(f"{call} lists no items")
            continue
        paths = (getattr(obj, "paths", None) or []) if r.files else []
        for p in dict.fromkeys(paths[:1] + paths[-1:]):
            if not Path(p).exists():
                problems.append(f"{call} lists '{p}', which does not exist")
    return problems


def instructions(ds: Dataset, data_dir: Path) -> str:
    q = lambda p: shlex.quote(str(p))
    return (ds.manual or "").format(data_dir=q(data_dir), downloads=q(data_dir / DOWNLOADS))


def _make_links(ds: Dataset, data_dir: Path) -> None:
    for link, target in ds.links:
        lp, tp = data_dir / link, data_dir / target
        if lp.exists() or lp.is_symlink():
            continue
        if not tp.exists():
            raise LayoutError(f"cannot link {lp} -> {tp}: {tp} does not exist")
        lp.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(tp, lp.parent), lp, target_is_directory=tp.is_dir())


def prepare(ds: Dataset, data_dir: Path, keep_archives: bool = False, allow_apt: bool = True) -> None:
    """Make ``ds`` ready under ``data_dir`` (see the module docstring); raises :class:`DataError` subclasses."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if not verify(ds, data_dir):
        say(f"[ok] {ds.name}: already in place under {data_dir}")
        return
    say(f"[..] {ds.name}: {ds.title}")
    if ds.debian_package and copy_from_debian(ds, data_dir, allow_apt) and not verify(ds, data_dir):
        say(f"[ok] {ds.name}: ready under {data_dir}")
        return
    for req in ds.requires:  # a check, when it is ready
        prepare(BY_NAME[req], data_dir, keep_archives, allow_apt)
    hand = []
    for src in ds.sources:
        try:
            install_source(src, ds, data_dir, keep_archives)
        except ManualStepError as e:
            hand.append(str(e))
    _make_links(ds, data_dir)
    problems = verify(ds, data_dir)
    if problems:
        listing = "\n".join(f"  - {p}" for p in hand + problems)
        if ds.manual:
            raise ManualStepError(
                f"{ds.name} needs a step by hand:\n{instructions(ds, data_dir)}\nStill missing:\n{listing}"
            )
        raise LayoutError(
            f"{ds.name} is not laid out as its readers expect after installing:\n{listing}\nIf a folder named here was "
            f"left by an earlier attempt or put there by hand, move it away and run `make data-{ds.name}` again."
        )
    say(f"[ok] {ds.name}: ready under {data_dir}")


# --------------------------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------------------------
def _checksum_label(s: Source) -> str:
    kind = next((k for k in ("sha256", "md5", "git_sha1", "md5_url") if getattr(s, k)), None)
    names = {"git_sha1": "git blob id", "md5_url": "md5 (read from its URL)"}
    return f"{names.get(kind, kind)}: {s.checksum_from}" if kind else NO_CHECKSUM


def markdown_table() -> str:
    """The catalogue table of docs/data.md (kept in sync by a test)."""
    rows = [
        "| target | dataset | layout under `DATA_DIR` | how | checksum from |",
        "| --- | --- | --- | --- | --- |",
    ]
    for d in DATASETS:
        how = (
            "by hand, then checked"
            if d.is_manual
            else ("Debian package, else download" if d.debian_package else "download")
        )
        if d.requires:
            how += f" (uses `make data-{'`, `make data-'.join(d.requires)}`)"
        labels = {s.filename: _checksum_label(s) for s in d.sources}
        if len(set(labels.values())) > 1:
            labels = {f: f"`{f}` {lab}" for f, lab in labels.items()}
        sums = list(dict.fromkeys(labels.values())) or [NO_CHECKSUM]
        layout = "<br>".join(f"`{p}`" for p in d.layout)
        rows.append(f"| `make data-{d.name}` | [{d.title}]({d.homepage}) | {layout} | {how} | {'; '.join(sums)} |")
    groups = [f"| `make data-{g}` | {', '.join(members)} |" for g, members in GROUPS.items()]
    return "\n".join(rows + ["", "| group target | datasets |", "| --- | --- |", *groups])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("names", nargs="*", help=f"datasets {sorted(BY_NAME)} or groups {sorted(GROUPS)}")
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("DATA_DIR", "data")))
    p.add_argument("--check", action="store_true", help="only check what is there, download nothing")
    p.add_argument("--keep-archives", action="store_true", help="keep downloaded archives in DATA_DIR/.downloads")
    p.add_argument("--no-apt", action="store_true", help="never call apt-get (Fashion-MNIST's Debian route)")
    p.add_argument("--list", action="store_true", help="print every dataset and whether it is ready")
    p.add_argument("--markdown", action="store_true", help="print the catalogue table of docs/data.md")
    a = p.parse_args(argv)
    if a.markdown:
        print(markdown_table())
        return 0
    data_dir = a.data_dir.expanduser().absolute()
    if a.list:
        for d in DATASETS:
            state = "ready" if not verify(d, data_dir) else ("missing (by hand)" if needs_hands(d) else "missing")
            print(f"  data-{d.name:<22} {state:<18} {d.title}")
        return 0
    try:
        datasets = resolve(a.names)
    except KeyError as e:
        say(str(e.args[0]))
        return 2
    failed = []
    for d in datasets:
        try:
            if a.check:
                problems = verify(d, data_dir)
                if problems:
                    raise LayoutError(f"{d.name}:\n" + "\n".join(f"  - {x}" for x in problems))
                say(f"[ok] {d.name}")
            else:
                prepare(d, data_dir, a.keep_archives, allow_apt=not a.no_apt)
        except DataError as e:
            say(f"[!!] {e}")
            failed.append(d.name)
    if failed:
        say(f"\nnot ready: {', '.join(failed)} (the messages above say why and what to do)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
