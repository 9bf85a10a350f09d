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
import threading
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
from alertdist.filters.confinement import ConfinementError, confine, plugin_paths

__all__ = ["ConfinedFilter", "ConfinementError", "confined_uid"]

_OUTCOMES = (PASSED, REJECTED, ERROR, MALFORMED)
_CODE = {outcome: i for i, outcome in enumerate(_OUTCOMES)}
_VERDICT = struct.Struct("<IBIH")  # batch number, outcome, annotations length, reason length
_COUNT = struct.Struct("<I")
_MAX_REASON_BYTES = 2000
_MAX_HELLO_BYTES = 64 * 1024
_F_SETPIPE_SZ, _PIPE_BYTES = 1031, 1 << 20
_UID_BASE, _UID_SPAN = 0x5A000000, 0x00FFFFFF  # far above any account a system hands out
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
        self.last_words = bytearray()  # the end of the child's stderr
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
            stderr=subprocess.PIPE,  # its last words name why it ended (`_exit`); read on, never waited for
            env=env,
            cwd="/",
            close_fds=True,
            pass_fds=(self.memory,),
            start_new_session=True,
        )
        self.last_words = bytearray()
        threading.Thread(target=_keep_tail, args=(self.process.stderr, self.last_words), daemon=True).start()
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
        ended = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        said = _printable(bytes(self.last_words).decode("utf-8", "replace").strip().splitlines()[-1:])
        return f"{ended}; its last words: {said}" if said else ended

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


def _keep_tail(stream, tail: bytearray, keep: int = 2048) -> None:
    """Read the child's stderr to its end, keeping only its last ``keep`` bytes: a plug-in that prints without end
    costs nothing, and the reason a child died is in its last line."""
    with contextlib.suppress(OSError, ValueError):
        while chunk := stream.read1(1 << 16):
            tail += chunk
            del tail[:-keep]


def _printable(lines: list[str], limit: int = 300) -> str:
    """Untrusted text made safe for a log line and an error message: printable characters only, bounded."""
    text = "".join(c if c.isprintable() else "?" for c in " ".join(lines))
    return text[:limit]


def _kill_uid(uid: int) -> None:
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if entry.stat().st_uid == uid:
                    os.kill(int(entry.name), signal.SIGKILL)


# ------------------------------------------------------------------------------------------------ the child


def _main() -> None:
    """The child: read the greeting, confine itself, load the plug-in, then judge batches until the pipe closes."""
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
    loaded = _load_confined(hello, reply)
    if loaded is not None:
        _judge_batches(loaded, hello, read, replies)


def _load_confined(hello: dict, reply):
    """Confine this process, then load the plug-in and describe it; None (the error replied) if either fails."""
    import importlib

    sys.dont_write_bytecode = True
    sys.path[:] = hello["path"]  # the runner's: where it finds the project and the plug-in

    for module in _PRELOAD:
        importlib.import_module(module)
    from alertdist.filters import load_filter

    try:
        confine(hello["uid"], hello["scratch"], plugin_paths(hello["spec"], hello["path"]))
    except ConfinementError as e:
        reply({"error": str(e)})
        return None
    try:
        loaded = load_filter(hello["spec"], columnar=hello["columnar"])
    except Exception as e:  # whatever the plug-in's import or setup raised: reported, the child ends
        reply({"error": f"{type(e).__name__}: {e}"})
        return None
    reply(
        {
            "name": loaded.name,
            "columnar": loaded.columnar,
            "fields": None if loaded.fields is None else list(loaded.fields),
            "columns": None if loaded.columns is None else list(loaded.columns),
            "origin": loaded.origin,
        }
    )
    return loaded


def _judge_batches(loaded, hello: dict, read, replies) -> None:
    """Each batch's packets from the shared memory; each verdict sent in the fixed binary layout."""
    from alertdist.filters.columnar import PacketBatches

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
