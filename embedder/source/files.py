"""Find the input files of a job and tell their formats, on any filesystem ``pyarrow.fs`` speaks.

A source path is a file, a directory (searched recursively), a glob (``data/*.parquet``, ``data/**/*.jsonl``)
or a URI (``s3://bucket/prefix``, ``gs://bucket/prefix``, ``file:///data``). Names starting with ``.`` or ``_``
(``_SUCCESS``, ``.crc`` files, ``_delta_log/``) are skipped below the path given. Hive partition folders
(``year=2024/``) are just folders: their values are not read as columns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pyarrow.fs as pafs

from embedder import storage
from embedder.errors import ConfigError, InputError
from embedder.storage import retry

FORMATS = ("parquet", "jsonl", "csv", "arrow")

_EXTENSIONS = {
    ".parquet": "parquet", ".pq": "parquet",
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
    ".csv": "csv",
    ".arrow": "arrow", ".feather": "arrow", ".ipc": "arrow",
}
# Compressed text can only be read from its start, so such a file becomes one shard.
_COMPRESSIONS = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd", ".bz2": "bz2"}
_GLOB_CHARS = re.compile(r"[*?\[]")


@dataclass(frozen=True, slots=True)
class SourceFile:
    """One input file, as discovered. ``size`` and ``version`` are part of every shard id planned from it."""

    uri: str
    """Absolute local path, or ``scheme://bucket/key`` for object storage."""
    format: str
    """``parquet``, ``jsonl``, ``csv`` or ``arrow``."""
    size: int
    mtime_ns: int | None
    version: str
    """Modification time in ns as text ("" when the filesystem reports none)."""

    @property
    def compression(self) -> str | None:
        """``gzip``/``zstd``/``bz2`` for a compressed JSONL or CSV file, else ``None``."""
        return _COMPRESSIONS.get(_suffix(self.uri))


def infer_format(name: str) -> str | None:
    """The format a file name implies (``data.jsonl.gz`` → ``jsonl``), or ``None``."""
    base = name.lower()
    if _suffix(base) in _COMPRESSIONS:
        base = base[: -len(_suffix(base))]
        fmt = _EXTENSIONS.get(_suffix(base))
        return fmt if fmt in ("jsonl", "csv") else None  # a gzipped Parquet file is not a thing pyarrow reads
    return _EXTENSIONS.get(_suffix(base))


def _suffix(name: str) -> str:
    leaf = name.rsplit("/", 1)[-1]
    dot = leaf.rfind(".")
    return leaf[dot:].lower() if dot > 0 else ""


def _hidden(relative: str) -> bool:
    return any(part.startswith((".", "_")) for part in relative.split("/") if part)


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """``**`` spans folders, ``*`` and ``?`` stay inside one name, ``[...]`` is a character class."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 1:]:
            end = pattern.index("]", i + 1)
            body = pattern[i + 1:end]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def _list(fs: pafs.FileSystem, fs_path: str, original: str) -> list[pafs.FileInfo]:
    """Files at ``fs_path``: the file itself, or the visible files under a folder or matching a glob."""
    match = _GLOB_CHARS.search(fs_path)
    base = fs_path if match is None else fs_path[: fs_path.rfind("/", 0, match.start()) + 1].rstrip("/")
    info = fs.get_file_info(base or "/")
    if info.type == pafs.FileType.NotFound:
        raise InputError(f"input path not found: {original}")
    if match is None and info.type == pafs.FileType.File:
        return [info]
    pattern = None if match is None else _glob_regex(fs_path[len(base):].lstrip("/"))
    found = []
    for entry in fs.get_file_info(pafs.FileSelector(base or "/", recursive=True)):
        relative = entry.path[len(base):].lstrip("/")
        if entry.type != pafs.FileType.File or _hidden(relative):
            continue
        if pattern is None or pattern.match(relative):
            found.append(entry)
    return found


def discover_files(path: str, format: str | None = None, *,
                   storage_options: dict[str, Any] | None = None) -> list[SourceFile]:
    """Every input file under ``path``, sorted by URI.

    Without ``format`` each file's format comes from its extension, and a file with an unknown extension is
    a :class:`ConfigError`. With ``format``, files whose extension names another format are skipped and files
    with no known extension (``part-00000``) are taken as ``format``.
    """
    if format is not None and format not in FORMATS:
        raise ConfigError(f"source.format: unknown format {format!r}; expected one of {', '.join(FORMATS)}")
    fs, fs_path = storage.resolve(path, storage_options)
    files = []
    for info in retry.call(retry.PLANNING, path, lambda: _list(fs, fs_path, path)):
        uri = storage.uri(fs, info.path)
        inferred = infer_format(info.path)
        if format is None and inferred is None:
            raise ConfigError(f"source.format: cannot tell the format of {uri} from its name; "
                              f"set source.format to one of {', '.join(FORMATS)}")
        if format is not None and inferred not in (None, format):
            continue
        fmt = format or inferred
        assert fmt is not None
        if _suffix(uri) in _COMPRESSIONS and fmt not in ("jsonl", "csv"):
            raise ConfigError(f"source.format: {uri} is compressed; only JSONL and CSV files may be")
        mtime_ns = info.mtime_ns
        files.append(SourceFile(uri, fmt, int(info.size or 0), mtime_ns,
                                "" if mtime_ns is None else str(mtime_ns)))
    if not files:
        what = f"{format} files" if format else "input files"
        raise InputError(f"no {what} found at {path} (names starting with '.' or '_' are ignored)")
    return sorted(files, key=lambda f: f.uri)
