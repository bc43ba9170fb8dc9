"""IMDB movie reviews from the raw Stanford text (aclImdb): a folder or a .tar.gz of it.

Looked up at `dataset.path`, else under `data_dir`, else downloaded from Stanford with a checksum.
Archives are extracted once into the cache directory; the parsed reviews are cached there as Parquet
so that later runs read one file instead of 50,000.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from seqlab.data.base import DatasetConfig
from seqlab.data.common import Examples, cache_root, finish_splits
from seqlab.errors import ConfigError, DataError
from seqlab.schema.registry import register_option

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
SHA256 = "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe"
ARCHIVE_NAMES = ("aclImdb_labeled.tar.gz", "aclImdb_v1.tar.gz", "aclImdb.tar.gz")
RATINGS = [1, 2, 3, 4, 7, 8, 9, 10]
TARGETS = {"sentiment": ["neg", "pos"], "rating": [str(r) for r in RATINGS]}


@dataclass
class ImdbConfig(DatasetConfig):
    target: str = "sentiment"  # sentiment (2 classes) | rating (8 classes)
    download: bool = True
    encoding: str = "utf-8"


register_option("dataset", "imdb", ImdbConfig, module=__name__)


def load(part):
    d = part.dataset
    if d.target not in TARGETS:
        raise ConfigError(f"Config key 'dataset.target' is {d.target!r}; dataset 'imdb' allows 'sentiment' "
                          "(2 classes, pos/neg) or 'rating' (8 classes, 1-4 and 7-10).")
    folder = find_aclimdb(d.path, part.data_dir, part.cache_dir, download=d.download)
    reviews = read_reviews(folder, d.encoding, cache_root(part.cache_dir))
    if part.cv_fold is not None and reviews["movie"].isna().any():
        reviews = _with_movies(reviews, folder, part)
    train = _examples(reviews[reviews["split"] == "train"], d.target)
    test = _examples(reviews[reviews["split"] == "test"], d.target)
    return finish_splits("imdb", train, test, TARGETS[d.target], part, source=str(folder))


def unlabeled_reviews(part) -> list[str]:
    """The 50,000 unlabeled reviews (aclImdb/train/unsup, for pretraining; never the test reviews): from the labeled
    folder when it holds them (an extracted official archive), else from aclImdb_unsup.tar.gz or aclImdb_v1.tar.gz
    next to it (extracted once into the cache), else downloaded with the official archive."""
    import pandas as pd  # imported when reading: configs are checked without it

    d = part.dataset
    folder = find_aclimdb(d.get("path") if d.get("name") == "imdb" else None, part.data_dir, part.cache_dir,
                          download=d.get("download", True))
    unsup = folder / "train" / "unsup"
    if not any(unsup.glob("*.txt")):
        unsup = _unsup_from_archive(folder, part.data_dir, part.cache_dir) / "train" / "unsup"
    cache = unsup.parent.parent.parent / "unsup.parquet"
    ours = unsup.resolve().is_relative_to(cache_root(part.cache_dir).resolve())
    if ours and cache.exists():
        return pd.read_parquet(cache)["text"].tolist()
    files = sorted(unsup.glob("*.txt"), key=_file_key)
    if not files:
        raise DataError(f"'{unsup}' holds no <id>_0.txt unlabeled reviews.")
    texts = [file.read_text(encoding=d.get("encoding", "utf-8"), errors="replace") for file in files]
    if ours:
        pd.DataFrame({"text": texts}).to_parquet(cache)
    return texts


def _unsup_archive(labeled: Path, data_dir: str, cache_dir: str | None) -> Path | None:
    """aclImdb_unsup.tar.gz (or the official archive) beside the labeled reviews, in data_dir, or downloaded."""
    root = Path(data_dir).expanduser()
    candidates = [base / name for base in (labeled.parent, labeled.parent.parent, root, root / "imdb")
                  for name in ("aclImdb_unsup.tar.gz", "aclImdb_v1.tar.gz")]
    candidates.append(cache_root(cache_dir) / "downloads" / "aclImdb_v1.tar.gz")
    return next((path for path in candidates if path.is_file()), None)


def _unsup_from_archive(labeled: Path, data_dir: str, cache_dir: str | None) -> Path:
    root = Path(data_dir).expanduser()
    archive = _unsup_archive(labeled, data_dir, cache_dir)
    if archive is None:
        raise DataError(f"The unlabeled IMDB reviews (aclImdb/train/unsup, corpus source 'imdb_unsup') were not found: "
                        f"'{labeled}' has no train/unsup folder and there is no aclImdb_unsup.tar.gz or "
                        f"aclImdb_v1.tar.gz in '{root}' or '{root / 'imdb'}'. Put the official archive there "
                        f"(download address: {URL}).")
    return _extract_once(archive, cache_root(cache_dir) / "imdb" / f"unsup-{_archive_key(archive)}",
                         select=lambda name: "/train/unsup/" in name,
                         complete=lambda folder: (folder / "train" / "unsup").is_dir(),
                         missing="no aclImdb/train/unsup/ folder of unlabeled reviews")


def _examples(frame: pd.DataFrame, target: str) -> Examples:
    if target == "sentiment":
        labels = (frame["sentiment"] == "pos").to_numpy(np.int64)
    else:
        labels = frame["rating"].map({r: i for i, r in enumerate(RATINGS)}).to_numpy(np.int64)
    movies = frame["movie"] if "movie" in frame else None
    groups = movies.tolist() if movies is not None and movies.notna().all() else None  # by movie, where known
    return Examples(texts=frame["text"].tolist(), labels=labels, ids=frame["id"].tolist(), groups=groups)


def _is_layout(folder: Path) -> bool:
    return (folder / "train" / "pos").is_dir() and (folder / "test" / "neg").is_dir()


def find_aclimdb(path: str | None, data_dir: str, cache_dir: str | None, download: bool = True) -> Path:
    """The aclImdb folder to read: from `path`, else under `data_dir`, else the cache, else downloaded."""
    if path:
        given = Path(path).expanduser()
        if not given.exists():
            raise DataError(f"dataset.path '{given}' does not exist. Expected an aclImdb folder "
                            "(train/ and test/ with pos/ and neg/) or a .tar.gz of it.")
        return _folder_from(given, cache_dir)
    root = Path(data_dir).expanduser()
    for base in (root, root / "imdb"):
        for name in ("aclImdb", *ARCHIVE_NAMES):
            if (base / name).exists():
                return _folder_from(base / name, cache_dir)
    downloaded = cache_root(cache_dir) / "downloads" / "aclImdb_v1.tar.gz"
    if downloaded.exists():
        return _folder_from(downloaded, cache_dir)
    if not download:
        raise DataError(_missing_message(root, "dataset.download is false"))
    return _folder_from(_download(downloaded, root), cache_dir)


def _folder_from(path: Path, cache_dir: str | None) -> Path:
    if path.is_dir():
        for candidate in (path, path / "aclImdb"):
            if _is_layout(candidate):
                return candidate
        raise DataError(f"'{path}' is not an aclImdb folder: expected train/pos, train/neg, test/pos and "
                        "test/neg folders of <id>_<rating>.txt files (or a parent folder holding aclImdb/).")
    if path.name.endswith((".tar.gz", ".tgz", ".tar")):
        return _extract(path, cache_dir)
    raise DataError(f"'{path}' is neither an aclImdb folder nor a .tar.gz archive of one.")


def _extract(archive: Path, cache_dir: str | None) -> Path:
    """Extract the labeled reviews once into the cache (the unlabeled ones only when asked: unlabeled_reviews)."""
    return _extract_once(archive, cache_root(cache_dir) / "imdb" / f"{archive.name.split('.')[0]}-{_archive_key(archive)}",
                         select=lambda name: "/unsup/" not in f"{name}/" and not name.endswith(".feat"),
                         complete=_is_layout, missing="no aclImdb/ folder with train/ and test/ pos/neg reviews")


def _archive_key(archive: Path) -> str:
    stat = archive.stat()
    return hashlib.sha1(f"{archive.resolve()}:{stat.st_size}:{int(stat.st_mtime)}".encode()).hexdigest()[:12]


def _extract_once(archive: Path, target: Path, select, complete, missing: str) -> Path:
    """The members `select` picks, extracted into `target` atomically (concurrent sweep jobs never see half a
    folder); returns its aclImdb folder."""
    if complete(target / "aclImdb"):
        return target / "aclImdb"
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info(f"extracting {archive} into {target} (once) ...")
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".extract-"))
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(staging, members=[m for m in tar.getmembers() if select(m.name)], filter="data")
        if not complete(staging / "aclImdb"):
            raise DataError(f"The archive '{archive}' holds {missing}.")
        try:
            staging.rename(target)
        except OSError:  # another process finished first
            pass
    except (tarfile.TarError, EOFError, OSError) as error:
        raise DataError(f"Could not extract '{archive}': {error}. Is it a complete .tar.gz of aclImdb?") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target / "aclImdb"


def _missing_message(root: Path, why: str) -> str:
    return (f"The IMDB reviews were not found and could not be downloaded ({why}). Put the Stanford "
            f"archive aclImdb_v1.tar.gz (or an extracted aclImdb/ folder) in '{root}' or '{root / 'imdb'}', "
            "set SEQLAB_DATA_DIR or data_dir to the folder that holds it, or pass dataset.path=<folder or "
            f"archive>. Download address: {URL}")


def _download(destination: Path, root: Path) -> Path:
    import urllib.error  # imported when downloading (http, ssl: about 60 ms of every config check otherwise)
    import urllib.request

    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_suffix(".part")
    log.info(f"downloading {URL} ...")
    try:
        urllib.request.urlretrieve(URL, partial)
    except (urllib.error.URLError, OSError) as error:
        partial.unlink(missing_ok=True)
        raise DataError(_missing_message(root, f"download failed: {error}")) from None
    digest = hashlib.sha256(partial.read_bytes()).hexdigest()
    if digest != SHA256:
        partial.unlink(missing_ok=True)
        raise DataError(f"The downloaded archive from {URL} has SHA-256 {digest}, expected {SHA256}; "
                        "it was deleted. Try again, or download it by hand.")
    partial.rename(destination)
    return destination


def read_reviews(folder: Path, encoding: str = "utf-8", cache: Path | None = None) -> pd.DataFrame:
    """All labeled reviews as a frame (split, sentiment, rating, id, text); for folders extracted into the
    cache folder `cache`, kept there as Parquet beside the extracted folder (a user's own folder is never
    written to)."""
    import pandas as pd  # imported when reading: configs are checked without it

    ours = cache is not None and folder.resolve().is_relative_to(cache.resolve())
    cache = folder.parent / f"reviews-{encoding}.parquet"
    if ours and cache.exists() and cache.stat().st_mtime >= folder.stat().st_mtime:
        frame = pd.read_parquet(cache)
        if "movie" in frame:  # else written by an older seqlab: read again
            return frame
    rows = []
    for split in ("train", "test"):
        for sentiment in ("neg", "pos"):
            directory = folder / split / sentiment
            movies = _movies(folder / split / f"urls_{sentiment}.txt")
            files = sorted(directory.glob("*.txt"), key=lambda p: _file_key(p))
            if not files:
                raise DataError(f"'{directory}' holds no <id>_<rating>.txt review files.")
            for file in files:
                review_id, rating = _file_key(file)
                try:
                    text = file.read_text(encoding=encoding)
                except UnicodeDecodeError as error:
                    raise DataError(f"'{file}' is not valid {encoding} ({error.reason} at byte {error.start}). "
                                    "Set dataset.encoding (e.g. latin-1) to the files' encoding.") from None
                rows.append((split, sentiment, rating, f"{split}/{sentiment}/{review_id}_{rating}", text,
                             movies[review_id] if review_id < len(movies) else None))
    frame = pd.DataFrame(rows, columns=["split", "sentiment", "rating", "id", "text", "movie"])
    if ours:
        frame.to_parquet(cache)
    return frame


def _with_movies(reviews: pd.DataFrame, folder: Path, part) -> pd.DataFrame:
    """Each review's movie from the URL lists of the unlabeled archive (aclImdb_unsup.tar.gz or the official one)
    beside the labeled reviews, so that cross-validation folds keep a movie's reviews together."""
    archive = _unsup_archive(folder, part.data_dir, part.cache_dir)
    if archive is None:
        _warn_ungrouped(str(folder))
        return reviews
    try:
        lists = _extract_once(archive, cache_root(part.cache_dir) / "imdb" / f"urls-{_archive_key(archive)}",
                              select=lambda name: "/urls_" in name,
                              complete=lambda found: (found / "test" / "urls_neg.txt").is_file(),
                              missing="no urls_*.txt movie lists")
    except DataError:
        _warn_ungrouped(str(folder))
        return reviews
    reviews = reviews.copy()
    for (split, sentiment), rows in reviews.groupby(["split", "sentiment"]).groups.items():
        movies = _movies(lists / split / f"urls_{sentiment}.txt")
        numbers = reviews.loc[rows, "id"].str.rsplit("/", n=1).str[-1].str.split("_").str[0].astype(int)
        reviews.loc[rows, "movie"] = [movies[n] if n < len(movies) else None for n in numbers]
    return reviews


@functools.lru_cache(maxsize=None)  # once per folder, not once per fold
def _warn_ungrouped(folder: str) -> None:
    log.warning(f"'{folder}' has no urls_*.txt movie lists and no aclImdb_unsup.tar.gz is beside it: the "
                "cross-validation folds are stratified but not grouped by movie (a movie's reviews may sit in two "
                "folds, which flatters the validation scores)")


def _movies(urls: Path) -> list[str]:
    """The movie of each review of a folder: line N of urls_<sentiment>.txt is review N's IMDb page
    (http://www.imdb.com/title/tt0453418/usercomments -> tt0453418); [] where the list is missing."""
    if not urls.is_file():
        return []
    return [line.strip().rstrip("/").split("/")[-2] if line.count("/") >= 4 else line.strip()
            for line in urls.read_text(encoding="utf-8").splitlines()]


def _file_key(path: Path) -> tuple[int, int]:
    stem = path.stem
    try:
        review_id, rating = stem.split("_")
        return int(review_id), int(rating)
    except ValueError:
        raise DataError(f"Review file '{path}' is not named <id>_<rating>.txt as in aclImdb.") from None
