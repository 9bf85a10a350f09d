"""What an archive location holds: its nights, their files and the checksums to check a download against.

One location, three kinds, one interface (`ArchiveLocation`): a local folder or any fsspec URL (``s3://``)
listed through fsspec, and an HTTP(S) directory laid out like UW's public archive
(https://ztf.uw.edu/alerts/public/), listed from its HTML index pages or, where the server shows none, from
its ``MD5SUMS``. HTTP goes through httpx rather than fsspec's aiohttp layer because resuming a download needs
to see exactly how the server answered a Range request (206, 200 or 416).

The layout is the archive's own (`alertdist.archive`): ``<survey>_<programme>_<YYYYMMDD>.tar.gz`` and ``MD5SUMS``
at the root, ``parquet/night=<YYYYMMDD>/programid=<N>/*.parquet``, ``manifests/<survey>_<YYYYMMDD>.json``
with the size, md5 and sha256 of every file of the night. UW's archive has only the first two.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import quote, unquote, urljoin, urlsplit

from alertdist.access.errors import ArchiveAccessError
from alertdist.access.names import MANIFEST_NAME, NIGHT_FOLDER, TARBALL_NAME, archive_name, checked, inside_url
from alertdist.archive.manifest import NightManifest
from alertdist.archive.storage import open_filesystem
from alertdist.archive.tarball import MD5SUMS, parse_md5sums
from alertdist.nights.dates import format_night, parse_night
from alertdist.publish.sources import require_location

__all__ = [
    "ArchiveAccessError",
    "ArchiveLocation",
    "NightListing",
    "RemoteFile",
    "check_sources",
    "list_nights",
    "open_location",
]

_HTTP_TIMEOUT = 30.0
_MAX_REDIRECTS = 5


def _not_found(where: str) -> str:
    return (
        f"{where}: not found (the archive lists it, but it is not there; not damaged, missing): nothing was read "
        "from it. Check the archive with `alertdist archive-list`, or tell its operators"
    )


@dataclass(frozen=True)
class RemoteFile:
    """One file of a night, ``path`` relative to the archive root; checksums where the archive publishes them."""

    path: str
    size: int | None = None
    md5: str | None = None
    sha256: str | None = None
    kind: str = "tarball"  # tarball | parquet

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass
class NightListing:
    """A night at one location: its tarballs, whether it has Parquet, where its manifest is."""

    night: dt.date
    tarballs: dict[str, RemoteFile] = field(default_factory=dict)  # file name -> file
    parquet: bool = False
    manifests: list[str] = field(default_factory=list)  # paths

    @property
    def label(self) -> str:
        """The night as the archive's names write it (``YYYYMMDD``)."""
        return format_night(self.night)

    def describe(self) -> str:
        sizes = [f.size for f in self.tarballs.values()]
        size = f", {sum(sizes) / 1e6:,.1f} MB" if sizes and None not in sizes else ""
        return (
            f"{self.label}  {len(self.tarballs)} tarball(s){size}  parquet: {'yes' if self.parquet else 'no'}"
            f"  manifest: {'yes' if self.manifests else 'no'}  ({', '.join(sorted(self.tarballs)) or '-'})"
        )


class ArchiveLocation:
    """Read access to an archive root; `open_location` picks the kind from the URL."""

    url: str

    def listdir(self, path: str = "") -> dict[str, int | None]:
        """Names directly in a folder (sub-folders end with ``/``) -> size when known; {} if it is absent."""
        raise NotImplementedError

    def read_bytes(self, path: str) -> bytes | None:
        """A small file's bytes, or None if it does not exist."""
        raise NotImplementedError

    def read_from(
        self, path: str, offset: int, chunk_size: int = 1 << 20, *, user_named: bool = False
    ) -> tuple[int, Iterator[bytes]]:
        """(start, chunks) of a file from ``offset``: ``start`` is where the bytes really begin (0 if the
        server ignored the range). Raises `ArchiveAccessError` if the file cannot be opened. ``path`` is a name the
        archive writes, or with ``user_named`` a plain file name the user gave (`names.checked`)."""
        raise NotImplementedError

    def display(self, path: str) -> str:
        return f"{self.url.rstrip('/')}/{path}"

    # --------------------------------------------------------------------------------------------- shared

    def nights(self) -> list[NightListing]:
        """Every night the location holds, oldest first."""
        found: dict[dt.date, NightListing] = {}
        root = self.listdir("")
        sums = self.md5sums()
        names = dict(root)
        if not any(TARBALL_NAME.fullmatch(n) for n in names):
            names.update(dict.fromkeys(sums))  # no index page (or an empty one): MD5SUMS names the files
        for name, size in names.items():
            m = TARBALL_NAME.fullmatch(name)
            if m and (night := _night_of(m)):
                found.setdefault(night, NightListing(night)).tarballs[name] = RemoteFile(name, size, sums.get(name))
        if "parquet/" in root:
            for name in self.listdir("parquet"):
                m = NIGHT_FOLDER.fullmatch(name.rstrip("/"))
                if m and (night := _night_of(m)):
                    found.setdefault(night, NightListing(night)).parquet = True
        if "manifests/" in root:
            for name in self.listdir("manifests"):
                m = MANIFEST_NAME.fullmatch(name)
                if m and (night := _night_of(m)):
                    found.setdefault(night, NightListing(night)).manifests.append(f"manifests/{name}")
        return [found[n] for n in sorted(found)]

    def md5sums(self) -> dict[str, str]:
        raw = self.read_bytes(MD5SUMS)
        if raw is None:
            return {}
        try:
            return parse_md5sums(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise ArchiveAccessError(f"{self.display(MD5SUMS)} is not an MD5SUMS file: {e}") from e

    def manifest(self, path: str) -> NightManifest:
        raw = self.read_bytes(path)
        if raw is None:
            raise ArchiveAccessError(f"manifest {self.display(path)} vanished while listing")
        try:
            return NightManifest.from_json(raw)
        except (ValueError, KeyError, TypeError) as e:
            raise ArchiveAccessError(f"{self.display(path)} is not a readable archive manifest: {e}") from e

    def parquet_files(self, night: dt.date) -> list[str]:
        """Paths of the night's Parquet files, found by listing (for archives whose manifest is missing)."""
        base = f"parquet/night={format_night(night)}"
        paths = []
        for folder in self.listdir(base):
            if folder.endswith("/"):
                paths += [
                    archive_name(f"{base}/{folder}{name}", night=night, kind="parquet").path
                    for name in self.listdir(f"{base}/{folder.rstrip('/')}")
                    if name.endswith(".parquet") and not name.startswith(".")  # not a writer's temporary
                ]
        return sorted(paths)

    def night_files(self, night: dt.date, survey: str | None = None) -> list[RemoteFile]:
        """Every tarball and Parquet file of ``night``, with the size, md5 and sha256 the archive publishes."""
        listing = {n.night: n for n in self.nights()}.get(night)
        if listing is None:
            raise ArchiveAccessError(
                f"night {format_night(night)} is not in {self.url}; `alertdist archive-list {self.url}` shows "
                "the nights it has"
            )
        files: dict[str, RemoteFile] = {}
        for name, f in listing.tarballs.items():
            if survey is None or name.startswith(f"{survey}_"):
                files[f.path] = f
        manifests = [p for p in listing.manifests if survey is None or p.startswith(f"manifests/{survey}_")]
        if not listing.manifests:  # no folder listing to find it by (an HTTP server without index pages): ask
            surveys = {TARBALL_NAME.fullmatch(n)["survey"] for n in listing.tarballs} if survey is None else {survey}
            manifests = [
                p
                for p in (f"manifests/{s}_{format_night(night)}.json" for s in sorted(surveys))
                if self.read_bytes(p) is not None
            ]
        for path in manifests:
            for programme in self.manifest(path).programmes.values():
                for kind, entry in programme.files.items():
                    _check_entry(entry, path, night, kind)
                    known = files.get(entry["path"])
                    if known is not None and known.md5 and known.md5 != entry.get("md5"):
                        raise ArchiveAccessError(
                            f"{self.url}: MD5SUMS and {path} disagree about {entry['path']} ({known.md5} vs "
                            f"{entry.get('md5')}); the archive is being rewritten or is inconsistent, try again later"
                        )
                    files[entry["path"]] = RemoteFile(
                        entry["path"], entry["size"], entry.get("md5"), entry["sha256"], kind
                    )
        if listing.parquet and not manifests:
            for path in self.parquet_files(night):
                files[path] = RemoteFile(
                    path, self.listdir(path.rsplit("/", 1)[0]).get(path.rsplit("/", 1)[1]), kind="parquet"
                )
        return [files[p] for p in sorted(files)]


_HEX = re.compile(r"[0-9a-f]+")


def _night_of(name: re.Match) -> dt.date | None:
    """The night a listed name carries, or None for digits that are no calendar date (not a name the archiver
    writes, so it is passed over like any other foreign name)."""
    try:
        return parse_night(name["night"])
    except ValueError:
        return None


def _check_entry(entry: object, manifest: str, night: dt.date, kind: str) -> None:
    """A manifest's file entry, checked before anything is fetched for it: a name the archive writes, never a
    place of the archive's choosing (`archive_name`), a size and checksums of the right form."""
    if not isinstance(entry, dict):
        raise ArchiveAccessError(f"{manifest}: the {kind} entry is not an object; the manifest is damaged")
    archive_name(entry.get("path"), night=night, kind=kind)
    size, md5, sha256 = entry.get("size"), entry.get("md5"), entry.get("sha256")
    wrong = [
        what
        for what, ok in (
            ("size", type(size) is int and size >= 0),
            ("md5", md5 is None or (isinstance(md5, str) and len(md5) == 32 and _HEX.fullmatch(md5))),
            ("sha256", isinstance(sha256, str) and len(sha256) == 64 and _HEX.fullmatch(sha256)),
        )
        if not ok
    ]
    if wrong:
        raise ArchiveAccessError(
            f"{manifest}: the entry for {entry['path']} has no valid {', '.join(wrong)}; the manifest is damaged or "
            "hostile: nothing was fetched for it. Tell the archive's operators"
        )


class FsspecLocation(ArchiveLocation):
    """A local folder or any fsspec URL (``s3://bucket/prefix`` through s3fs)."""

    def __init__(self, url: str, storage_options: dict | None = None) -> None:
        self.url = str(url)
        self.fs, self.root = open_filesystem(self.url, storage_options, ArchiveAccessError, "archive location")

    def _full(self, path: str) -> str:
        return f"{self.root}/{path}".rstrip("/") if path else self.root

    def is_folder(self) -> bool:
        try:
            return self.fs.isdir(self.root)
        except OSError as e:
            raise ArchiveAccessError(f"cannot reach {self.url}: {e}; check the path or URL and credentials") from e

    def _file(self, path: str, user_named: bool = False) -> str:
        return self._full(checked(path, user_named=user_named))

    def listdir(self, path: str = "") -> dict[str, int | None]:
        self.fs.invalidate_cache()
        try:
            entries = self.fs.ls(self._full(path), detail=True)
        except FileNotFoundError:
            if not path:
                raise ArchiveAccessError(f"archive location {self.url} does not exist; check the path or URL") from None
            return {}
        except OSError as e:
            raise ArchiveAccessError(f"listing {self.display(path)} failed: {e}; check the URL and credentials") from e
        found = {}
        for entry in entries:
            name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
            if entry["type"] == "directory":
                found[f"{name}/"] = None
            else:
                found[name] = entry.get("size")
        return found

    def read_bytes(self, path: str) -> bytes | None:
        try:
            return self.fs.cat_file(self._file(path))
        except FileNotFoundError:
            return None
        except OSError as e:
            raise ArchiveAccessError(f"reading {self.display(path)} failed: {e}") from e

    def read_from(
        self, path: str, offset: int, chunk_size: int = 1 << 20, *, user_named: bool = False
    ) -> tuple[int, Iterator[bytes]]:
        try:
            handle = self.fs.open(self._file(path, user_named), "rb", block_size=8 * chunk_size)
            handle.seek(offset)
        except FileNotFoundError as e:
            raise ArchiveAccessError(_not_found(self.display(path))) from e
        except OSError as e:
            raise ArchiveAccessError(f"opening {self.display(path)} at byte {offset} failed: {e}") from e

        def chunks() -> Iterator[bytes]:
            with handle:
                while block := handle.read(chunk_size):
                    yield block

        return offset, chunks()


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        if tag == "a":
            self.hrefs += [v for k, v in attrs if k == "href" and v]


class HttpLocation(ArchiveLocation):
    """An HTTP(S) directory: Apache/nginx/``http.server`` index pages, or only files and an ``MD5SUMS``."""

    def __init__(self, url: str, client=None) -> None:
        import httpx

        self.url = url if url.endswith("/") else f"{url}/"
        self.client = client or httpx.Client(timeout=httpx.Timeout(_HTTP_TIMEOUT, connect=10.0))
        self._httpx = httpx

    def _url(self, path: str) -> str:
        url = urljoin(self.url, quote(path, safe="/"))
        if not inside_url(self.url, url):
            raise ArchiveAccessError(f"{path!r} would be fetched from {url}, outside the archive {self.url}: refused")
        return url

    def _send(self, url: str, headers: dict | None = None, *, stream: bool = False):
        """GET ``url``, following a redirect only while it stays under the archive's URL (`inside_url`)."""
        for _ in range(_MAX_REDIRECTS + 1):
            response = self.client.send(
                self.client.build_request("GET", url, headers=headers), stream=stream, follow_redirects=False
            )
            if not response.is_redirect:
                return response
            target = urljoin(url, response.headers["location"])
            response.close()
            if not inside_url(self.url, target):
                raise ArchiveAccessError(
                    f"GET {url} was redirected to {target}, outside the archive {self.url}: refused, nothing was "
                    "read from there. Give the archive's final URL, or tell its operators"
                )
            url = target
        raise ArchiveAccessError(f"GET {url}: more than {_MAX_REDIRECTS} redirects; give the archive's final URL")

    def _get(self, path: str):
        try:
            return self._send(self._url(path))
        except self._httpx.HTTPError as e:
            raise ArchiveAccessError(f"GET {self._url(path)} failed: {e}; is the server up and the URL right?") from e

    def listdir(self, path: str = "") -> dict[str, int | None]:
        folder = f"{path.rstrip('/')}/" if path else ""
        response = self._get(folder)
        if response.status_code in (403, 404) or "html" not in response.headers.get("content-type", ""):
            return {}
        if response.status_code != 200:
            raise ArchiveAccessError(f"GET {self._url(folder)} answered {response.status_code}")
        parser = _Links()
        parser.feed(response.text)
        base = urlsplit(self._url(folder)).path
        found = {}
        for href in parser.hrefs:
            target = urlsplit(urljoin(self._url(folder), href))
            if target.query or target.fragment or not inside_url(self._url(folder), target.geturl()):
                continue  # sort links (?C=N), the parent folder, other sites
            name = unquote(target.path[len(base) :])
            if name and "/" not in name.rstrip("/"):
                found[name] = None  # index pages show rounded sizes at best; the manifest has exact ones
        return found

    def read_bytes(self, path: str) -> bytes | None:
        response = self._get(archive_name(path).path)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise ArchiveAccessError(f"GET {self._url(path)} answered {response.status_code}")
        return response.content

    def read_from(
        self, path: str, offset: int, chunk_size: int = 1 << 20, *, user_named: bool = False
    ) -> tuple[int, Iterator[bytes]]:
        # identity: Range offsets count the file's own bytes, never a transfer encoding's
        headers = {"Accept-Encoding": "identity", **({"Range": f"bytes={offset}-"} if offset else {})}
        try:
            response = self._send(self._url(checked(path, user_named=user_named)), headers, stream=True)
        except self._httpx.HTTPError as e:
            raise ConnectionError(f"GET {self._url(path)} from byte {offset} failed: {e}") from e
        if response.status_code == 416:  # nothing after `offset`: what we have is the whole file (or more)
            response.close()
            return offset, iter(())
        if response.status_code == 404:
            response.close()
            raise ArchiveAccessError(_not_found(self.display(path)))
        if response.status_code not in (200, 206):
            response.close()
            raise ArchiveAccessError(f"GET {self._url(path)} answered {response.status_code}")
        start = 0
        if response.status_code == 206:
            m = re.match(r"bytes (\d+)-", response.headers.get("content-range", ""))
            start = int(m.group(1)) if m else 0

        def chunks() -> Iterator[bytes]:
            try:
                yield from response.iter_bytes()  # as received: a chunk buffer would lose bytes on a cut
            except self._httpx.HTTPError as e:  # the connection dropped mid-file: the caller resumes
                raise ConnectionError(f"GET {self._url(path)} broke off: {e}") from e
            finally:
                response.close()

        return start, chunks()


def open_location(url: str, storage_options: dict | None = None) -> ArchiveLocation:
    """The archive at ``url``: ``http(s)://`` an HTTP directory, anything else a folder or fsspec URL."""
    if str(url).startswith(("http://", "https://")):
        return HttpLocation(str(url))
    return FsspecLocation(str(url), storage_options)


def list_nights(url: str, storage_options: dict | None = None) -> list[NightListing]:
    """The nights available at an archive location (folder, ``s3://...`` or an HTTP(S) directory), oldest first."""
    return open_location(url, storage_options).nights()


def check_sources(specs: list[str], *, archived_night: dt.date | None, storage_options: dict | None = None) -> None:
    """Refuse, before anything is created or read, a source that is not there, and a folder holding several
    nights when no night is named (read whole, it would merge them silently)."""
    for spec in map(str, specs):
        if spec.endswith((".tar", ".tar.gz", ".tgz", ".parquet", ".avro")):
            if not spec.startswith(("http://", "https://")):  # an HTTP file is checked by reading it
                require_location(spec, storage_options)
            continue
        if not spec.startswith(("http://", "https://")):
            require_location(spec, storage_options)
            if not FsspecLocation(spec, storage_options).is_folder():  # /etc/passwd
                raise ArchiveAccessError(
                    f"{spec} is neither an archive root or Parquet dataset (a folder), a tarball (.tar.gz) nor a "
                    "Parquet file (.parquet): give one of those"
                )
        if archived_night is not None:
            continue
        location = open_location(spec, storage_options)
        nights = {format_night(n.night) for n in location.nights()}
        nights |= {m["night"] for name in location.listdir("") if (m := NIGHT_FOLDER.fullmatch(name.rstrip("/")))}
        if len(nights) > 1:
            raise ArchiveAccessError(
                f"{spec} holds {len(nights)} nights ({', '.join(sorted(nights)[:5])}"
                f"{', ...' if len(nights) > 5 else ''}): name one with --archived-night YYYYMMDD"
            )
