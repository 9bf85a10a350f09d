"""Run a filter plug-in as untrusted code: in a child process of its own that judges packets and can reach nothing.

A live copy (`alertdist.filters.live`) consumes, produces and commits; only the *judge* step runs here, in one
long-lived child per copy that receives raw packets over a pipe and sends back one verdict per packet. Before
the plug-in is even imported, the child (started with an empty environment and no file descriptor but its pipes):

- as root: moves into a network namespace of its own (no interface up: no connection to anything), and drops
  to a uid and gid of its own (`confined_uid`, one per filter and copy, with no supplementary group);
- always, where the kernel has Landlock: may read only the Python installation, the system's libraries, the
  packages it imports and the plug-in's own package, and write only a private scratch folder and /dev/shm; no
  TCP connect or bind; no signal to a process outside its sandbox (`alertdist.filters.landlock`).

So the plug-in has no Kafka login (none in its environment, memory or arguments) and cannot read the home's
secrets or open a connection to a broker. A batch has a deadline: the verdicts not given by then are ERROR, the
child is killed (with every process of its uid) and a new one started for the next batch. Nothing the child sends
is trusted: verdicts are parsed from a fixed binary layout (never unpickled), sizes are capped, annotations must
be a JSON object within `MAX_ANNOTATION_BYTES`.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import mmap
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

from alertdist.filters import (
    ERROR,
    MALFORMED,
    MAX_ANNOTATION_BYTES,
    PASSED,
    REJECTED,
    FilterLookupError,
    Verdict,
    passed_verdict,
    short_reason,
)

__all__ = ["ConfinedFilter", "ConfinementError", "confined_uid"]

_OUTCOMES = (PASSED, REJECTED, ERROR, MALFORMED)
_CODE = {outcome: i for i, outcome in enumerate(_OUTCOMES)}
_VERDICT = struct.Struct("<IBIH")  # batch number, outcome, annotations length, reason length
_COUNT = struct.Struct("<I")
_MAX_REASON_BYTES = 2000
_MAX_HELLO_BYTES = 64 * 1024
_F_SETPIPE_SZ, _PIPE_BYTES = 1031, 1 << 20
_UID_BASE, _UID_SPAN = 0x5A000000, 0x00FFFFFF  # far above any account a system hands out
_CLONE_NEWNET, _CLONE_NEWNS = 0x40000000, 0x00020000
_MS_NOSUID, _MS_NODEV, _MS_BIND, _MS_REC, _MS_PRIVATE = 0x2, 0x4, 0x1000, 0x4000, 0x40000
#: Fresh, empty, private memory file systems the child sees instead of the host's (its scratch space).
_PRIVATE_TMPFS = ("/tmp", "/dev/shm")
_PR_SET_PDEATHSIG = 1
#: Modules the child imports before it is confined (trusted code, and the plug-in's likely needs).
_PRELOAD = (
    "numpy",
    "pyarrow",
    "alertdist.schemas",
    "alertdist.avro.codec",
    "alertdist.avro.writer_schemas",
    "alertdist.avro.arrow",
    "alertdist.avro.arrow_decoder",
    "alertdist.filters.columnar",
    "alertdist.filters.bundled",
)


class ConfinementError(RuntimeError):
    """The child could not be confined as asked: it was not started (a plug-in never runs unconfined)."""


def confined_uid(spec: str, copy_index: int) -> int:
    """The uid (and gid) a filter's copy runs its plug-in as, when the runner is root: its own, stable."""
    return _UID_BASE + zlib.crc32(f"{spec}\0{copy_index}".encode()) % _UID_SPAN


class ConfinedFilter:
    """A filter whose code runs in a confined child; `judge` gives one verdict per packet within ``deadline_s``.

    ``name``, ``columnar``, ``fields`` and ``columns`` are what the child reported after loading the plug-in
    (the parent never imports it). Raises `FilterLookupError` if the plug-in cannot be loaded or set up."""

    def __init__(
        self,
        spec: str,
        *,
        columnar: bool = False,
        copy_index: int = 0,
        deadline_s: float = 10.0,
        setup_s: float = 120.0,
    ):
        self.spec, self.want_columnar, self.copy_index = spec, columnar, copy_index
        self.deadline_s, self.setup_s = deadline_s, setup_s
        self.uid = confined_uid(spec, copy_index) if os.geteuid() == 0 else None
        self.process: subprocess.Popen | None = None
        self.buffer = bytearray()
        self.batch = 0
        self.restarts = 0
        self.last_failure = ""  # why the last batch's unjudged packets got ERROR ("" when it was whole)
        self.scratch: Path | None = None
        self.memory = -1  # the memfd the batches are passed in, and its mapping here
        self.shared: mmap.mmap | None = None
        hello = self._start()
        self.name: str = hello["name"]
        self.columnar: bool = hello["columnar"]
        self.fields = None if hello["fields"] is None else tuple(hello["fields"])
        self.columns = None if hello["columns"] is None else tuple(hello["columns"])
        self.origin: str = hello["origin"]

    def __repr__(self) -> str:
        return f"ConfinedFilter({self.spec!r}, name={self.name!r}, uid={self.uid})"

    # ------------------------------------------------------------------------------------------- judging

    def judge(self, packets: list[bytes]) -> tuple[list[Verdict], int]:
        """Verdicts for ``packets`` in order, and how many of them the plug-in gave (the rest are ERROR because
        the batch's deadline passed or the child died; `last_failure` says which). Starts a child if needed."""
        self.last_failure = ""
        if not packets:
            return [], 0
        if self.process is None and self._start()["name"] != self.name:
            self._stop()
            raise FilterLookupError(f"filter {self.spec!r} changed its name on a restart: refused")
        self.batch += 1
        deadline = time.monotonic() + self.deadline_s
        verdicts: list[Verdict] = []
        try:
            self._share(packets)
            lengths = struct.pack(f"<{len(packets)}I", *map(len, packets))
            self._send(b"".join((_COUNT.pack(self.batch), _COUNT.pack(len(packets)), lengths)), deadline)
            while len(verdicts) < len(packets):
                verdicts.append(self._verdict(deadline))
        except _ChildFailed as e:
            self.last_failure = str(e)
            self._stop()
            judged = len(verdicts)
            failed = Verdict(ERROR, reason=short_reason(f"{self.last_failure}; its process was killed and restarted"))
            return verdicts + [failed] * (len(packets) - judged), judged
        return verdicts, len(verdicts)

    def _share(self, packets: list[bytes]) -> None:
        """The batch's packets, back to back, into the memory the child reads them from (no pipe copies)."""
        total = sum(map(len, packets))
        if self.shared is None or len(self.shared) < total:
            size = max(total, 2 * (len(self.shared) if self.shared is not None else 0), 1 << 20)
            if self.shared is not None:
                self.shared.close()
            os.ftruncate(self.memory, size)  # only grows: the child cannot shrink it under this mapping (sealed)
            self.shared = mmap.mmap(self.memory, size)
        at = 0
        for packet in packets:
            self.shared[at : at + len(packet)] = packet
            at += len(packet)

    def _verdict(self, deadline: float) -> Verdict:
        batch, code, n_annotations, n_reason = _VERDICT.unpack(self._recv(_VERDICT.size, deadline))
        if batch != self.batch or code >= len(_OUTCOMES):
            raise _ChildFailed(f"the filter's process broke the verdict protocol (batch {batch}, outcome {code})")
        if n_annotations > MAX_ANNOTATION_BYTES + 1 or n_reason > _MAX_REASON_BYTES:
            raise _ChildFailed("the filter's process sent an oversized verdict")
        annotations = self._recv(n_annotations, deadline)
        reason = self._recv(n_reason, deadline).decode("utf-8", "replace")
        outcome = _OUTCOMES[code]
        if outcome != PASSED:
            return Verdict(outcome, reason=short_reason(reason)) if reason else Verdict(outcome)
        return passed_verdict(annotations, checked=False)

    # ------------------------------------------------------------------------------------------- the child

    def _start(self) -> dict:
        if self.uid is None:  # as root the child mounts its own empty /tmp instead
            self.scratch = Path(tempfile.mkdtemp(prefix="alertdist-filter-"))
        scratch = str(self.scratch or "/tmp")
        env = {"HOME": "/nonexistent", "LANG": "C.UTF-8", "TMPDIR": scratch, "PYTHONDONTWRITEBYTECODE": "1"}
        self.memory = os.memfd_create("alertdist-filter-batch", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        fcntl.fcntl(self.memory, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL)
        self.process = subprocess.Popen(
            [sys.executable, "-I", "-m", "alertdist.filters.confined"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            cwd="/",
            close_fds=True,
            pass_fds=(self.memory,),
            start_new_session=True,
        )
        for fd in (self.process.stdin.fileno(), self.process.stdout.fileno()):
            os.set_blocking(fd, False)
            with contextlib.suppress(OSError):  # fewer, larger copies for a batch of megabytes
                fcntl.fcntl(fd, _F_SETPIPE_SZ, _PIPE_BYTES)
        self.buffer.clear()
        hello = {
            "spec": self.spec,
            "columnar": self.want_columnar,
            "path": [p for p in sys.path if p],
            "uid": self.uid,
            "scratch": scratch,
            "memory": self.memory,
        }
        deadline = time.monotonic() + self.setup_s
        try:
            text = json.dumps(hello).encode()
            self._send(_COUNT.pack(len(text)) + text, deadline)
            (size,) = _COUNT.unpack(self._recv(_COUNT.size, deadline))
            if size > _MAX_HELLO_BYTES:
                raise _ChildFailed("the filter's process sent an oversized greeting")
            answer = json.loads(self._recv(size, deadline))
            if not isinstance(answer, dict):
                raise _ChildFailed("the filter's process sent no greeting")
        except (_ChildFailed, ValueError) as e:
            self._stop()
            raise FilterLookupError(f"starting filter {self.spec!r} in its confined process failed: {e}") from None
        if "error" in answer:
            self._stop()
            raise FilterLookupError(short_reason(str(answer["error"])))
        return _checked_hello(answer)

    def _send(self, data: bytes, deadline: float) -> None:
        fd = self.process.stdin.fileno()
        view = memoryview(data)
        while view:
            self._wait(fd, deadline, write=True)
            try:
                view = view[os.write(fd, view[: 1 << 20]) :]
            except BlockingIOError:
                continue
            except OSError as e:  # BrokenPipeError: the child is gone
                raise _ChildFailed(f"the filter's process ended ({self._exit()}): {e.strerror}") from None

    def _recv(self, n: int, deadline: float) -> bytes:
        fd = self.process.stdout.fileno()
        while len(self.buffer) < n:
            self._wait(fd, deadline, write=False)
            try:
                chunk = os.read(fd, max(1 << 16, n - len(self.buffer)))
            except BlockingIOError:
                continue
            if not chunk:
                raise _ChildFailed(f"the filter's process ended ({self._exit()})")
            self.buffer += chunk
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    def _wait(self, fd: int, deadline: float, *, write: bool) -> None:
        left = deadline - time.monotonic()
        ready = select.select([], [fd], [], max(left, 0))[1] if write else select.select([fd], [], [], max(left, 0))[0]
        if not ready:
            raise _ChildFailed(
                f"the filter gave no verdict within its deadline ({self.deadline_s:g} s a batch)"
                if self.batch
                else f"the filter was not set up within {self.setup_s:g} s"
            )

    def _exit(self) -> str:
        try:
            code = self.process.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            code = None
        if code is None:
            return "still running"
        return f"killed by signal {-code}" if code < 0 else f"exit code {code}"

    def _stop(self) -> None:
        """Kill the child, and every process of its uid (whatever it started, in any session), and its scratch."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
            if self.uid is not None:
                _kill_uid(self.uid)
            self.process.wait()
            for stream in (self.process.stdin, self.process.stdout):
                with contextlib.suppress(OSError):
                    stream.close()
            self.process = None
        if self.shared is not None:
            self.shared.close()
            self.shared = None
        if self.memory >= 0:
            os.close(self.memory)
            self.memory = -1
            self.restarts += 1
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None

    def close(self) -> None:
        self._stop()


class _ChildFailed(Exception):
    pass


def _checked_hello(answer: dict) -> dict:
    """The child's description of its filter, every value checked: it comes from untrusted code."""
    name, columnar, origin = answer.get("name"), answer.get("columnar"), answer.get("origin")
    names_ok = all(
        answer.get(k) is None or (isinstance(answer[k], list) and all(isinstance(v, str) for v in answer[k]))
        for k in ("fields", "columns")
    )
    if not (isinstance(name, str) and isinstance(columnar, bool) and isinstance(origin, str) and names_ok):
        raise FilterLookupError("the filter's confined process described its filter wrongly")
    return answer


def _kill_uid(uid: int) -> None:
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if entry.stat().st_uid == uid:
                    os.kill(int(entry.name), signal.SIGKILL)


# ------------------------------------------------------------------------------------------------ the child


def _confine(uid: int | None, scratch: str, plugin_paths: list[str]) -> None:
    """Shut this process in before any plug-in code runs; raises `ConfinementError` if it cannot."""
    from alertdist.filters import landlock

    libc = ctypes.CDLL(None, use_errno=True)

    def check(result: int, doing: str) -> None:
        if result != 0:
            raise ConfinementError(f"cannot {doing}: {os.strerror(ctypes.get_errno())}")

    python = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, *plugin_paths}
    python |= _imported_packages() | _project_folders()
    read = {"/usr", "/lib", "/lib64", "/etc", "/proc", "/sys/devices/system/cpu", "/dev/urandom", "/dev/null", *python}
    if uid is not None:
        check(libc.unshare(_CLONE_NEWNET | _CLONE_NEWNS), "enter a network and mount namespace of its own")
        check(libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None), "make its mounts private")
        handles = _open_paths(python)  # before /tmp is covered: the project itself may live under it
        for folder in _PRIVATE_TMPFS:
            options = b"mode=1777,size=1g"
            check(libc.mount(b"tmpfs", folder.encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV, options), f"mount {folder}")
        _expose(libc, handles, check)
    try:
        private = _PRIVATE_TMPFS if uid is not None else ("/dev/shm",)  # the Arrow decoder's scratch files
        landlock.restrict(sorted(read), [scratch, *private, "/dev/null"])
    except landlock.LandlockError as e:
        if uid is None:  # nothing else would confine it
            raise ConfinementError(f"cannot confine the plug-in (not root, and no Landlock): {e}") from None
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
        if os.getuid() != uid or os.geteuid() != uid:
            raise ConfinementError(f"could not drop to uid {uid}")
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # after setuid, which clears it


def _open_paths(paths: set[str]) -> dict[Path, int]:
    """A handle on each path that exists, taken while this process can still reach it."""
    return {Path(p): os.open(p, os.O_PATH | os.O_CLOEXEC) for p in sorted(paths) if os.path.exists(p)}


def _expose(libc, handles: dict[Path, int], check) -> None:
    """Keep these paths reachable once this process is no longer root, where a folder above them bars the way (Python
    installed under /root, mode 0700; a project cloned under a private folder of /tmp, which this process now sees as
    an empty tmpfs): in this mount namespace only, that folder becomes an empty tmpfs holding nothing but bind
    mounts of these paths (so, under /root, nothing else of root's home)."""
    covered = {Path(folder) for folder in _PRIVATE_TMPFS}  # fresh tmpfs already: what stood there is out of sight
    barred: dict[Path, list[Path]] = {}
    for path in handles:
        for folder in reversed(path.parents):  # from / down
            if folder in covered or not os.stat(folder).st_mode & 0o001:  # gone, or no search right for others
                barred.setdefault(folder, []).append(path)
                break
    mask = os.umask(0o022)  # the folders made for the mounts must be searchable by the confined uid
    try:
        for barrier, inside in barred.items():
            kept = [p for p in inside if not any(q != p and q in p.parents for q in inside)]
            if barrier not in covered:
                options = b"mode=755"
                check(libc.mount(b"tmpfs", str(barrier).encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV, options), "cover")
            for path in kept:
                fd = handles[path]
                if os.path.isdir(f"/proc/self/fd/{fd}"):
                    path.mkdir(parents=True, exist_ok=True)
                else:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.touch()
                source = f"/proc/self/fd/{fd}".encode()
                check(libc.mount(source, str(path).encode(), None, _MS_BIND | _MS_REC, None), f"expose {path}")
    finally:
        os.umask(mask)
        for fd in handles.values():
            os.close(fd)


def _project_folders() -> set[str]:
    """The project's folders installed under alertdist's name from elsewhere (pyproject.toml's package-dir: flows,
    tasks, infra, schemas): a plug-in, or what it imports, may import them lazily. Found, not imported."""
    import importlib.util

    found = set()
    for name in ("alertdist.flows", "alertdist.tasks", "alertdist.infra", "alertdist.schemas"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            found.update(spec.submodule_search_locations)
    return found


def _imported_packages() -> set[str]:
    """Where every package imported so far lives (and each top-level module): what later, lazy imports read."""
    found = set()
    for module in list(sys.modules.values()):
        paths = getattr(module, "__path__", None)
        if paths is not None:
            found.update(p for p in paths if isinstance(p, str))
        elif "." not in getattr(module, "__name__", ".") and isinstance(getattr(module, "__file__", None), str):
            found.add(module.__file__)
    return found


def _plugin_paths(spec: str, path: list[str]) -> list[str]:
    """Where the plug-in's top-level package (or module file) is, found without running any of its code."""
    import importlib.machinery

    if ":" not in spec:
        return []
    top = spec.partition(":")[0].split(".")[0]
    found = importlib.machinery.PathFinder.find_spec(top, path)
    if found is None:
        return []
    if found.submodule_search_locations:
        return list(found.submodule_search_locations)
    return [found.origin] if found.origin else []


def _main() -> None:
    requests = os.fdopen(os.dup(0), "rb", buffering=0)
    replies = os.fdopen(os.dup(1), "wb", buffering=0)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)  # a plug-in's print() must not reach the verdicts

    def read(n: int) -> memoryview:
        data = memoryview(bytearray(n))
        at = 0
        while at < n:
            got = requests.readinto(data[at:])
            if not got:
                sys.exit(0)  # the runner closed the pipe: done
            at += got
        return data

    def reply(obj: dict) -> None:
        text = json.dumps(obj).encode()
        replies.write(_COUNT.pack(len(text)) + text)

    (size,) = _COUNT.unpack(read(_COUNT.size))
    hello = json.loads(bytes(read(size)))
    import importlib

    sys.dont_write_bytecode = True
    sys.path[:] = hello["path"]  # the runner's: where it finds the project and the plug-in

    for module in _PRELOAD:
        importlib.import_module(module)
    from alertdist.filters import load_filter
    from alertdist.filters.columnar import PacketBatches

    try:
        _confine(hello["uid"], hello["scratch"], _plugin_paths(hello["spec"], hello["path"]))
    except ConfinementError as e:
        reply({"error": str(e)})
        return
    try:
        loaded = load_filter(hello["spec"], columnar=hello["columnar"])
    except Exception as e:  # whatever the plug-in's import or setup raised: reported, the child ends
        reply({"error": f"{type(e).__name__}: {e}"})
        return
    reply(
        {
            "name": loaded.name,
            "columnar": loaded.columnar,
            "fields": None if loaded.fields is None else list(loaded.fields),
            "columns": None if loaded.columns is None else list(loaded.columns),
            "origin": loaded.origin,
        }
    )
    batches = PacketBatches(loaded, Path(hello["scratch"])) if loaded.columnar else None
    shared = None
    while True:
        batch, n = struct.unpack("<II", read(8))
        lengths = struct.unpack(f"<{n}I", read(4 * n))
        total = sum(lengths)
        if shared is None or len(shared) < total:
            shared = mmap.mmap(hello["memory"], os.fstat(hello["memory"]).st_size, prot=mmap.PROT_READ)
        packets, at = [], 0
        for length in lengths:
            packets.append(shared[at : at + length])
            at += length
        verdicts = batches.judge(packets) if batches is not None else map(loaded.judge, packets)
        for verdict in verdicts:  # each as soon as it is known: a hang later in the batch costs only the rest
            reason = verdict.reason.encode()[:_MAX_REASON_BYTES]
            annotations = verdict.annotations if verdict.outcome == PASSED else b""
            header = _VERDICT.pack(batch, _CODE[verdict.outcome], len(annotations), len(reason))
            replies.write(header + annotations + reason)


if __name__ == "__main__":
    _main()
