"""Shut a filter plug-in's process in before any plug-in code runs (`alertdist.filters.confined` starts it).

As root: a network namespace of its own with no interface up, a mount namespace whose /tmp and /dev/shm are fresh
and private, and a uid and gid of its own. Always, where the kernel has Landlock: read only what Python and the
plug-in need, write only the scratch folder (`alertdist.filters.landlock`). A process that cannot be confined as
asked raises `ConfinementError` and the plug-in never runs.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from pathlib import Path

__all__ = ["ConfinementError", "confine", "plugin_paths"]

_CLONE_NEWNET, _CLONE_NEWNS = 0x40000000, 0x00020000
_MS_NOSUID, _MS_NODEV, _MS_BIND, _MS_REC, _MS_PRIVATE = 0x2, 0x4, 0x1000, 0x4000, 0x40000
#: Fresh, empty, private memory file systems the child sees instead of the host's (its scratch space).
_PRIVATE_TMPFS = ("/tmp", "/dev/shm")
_PR_SET_PDEATHSIG = 1


class ConfinementError(RuntimeError):
    """The child could not be confined as asked: it was not started (a plug-in never runs unconfined)."""


def confine(uid: int | None, scratch: str, plugin_paths: list[str]) -> None:
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
    """The project's folders linked into alertdist from the top of the repository (alertdist/flows -> ../flows, and
    tasks, infra, schemas): a plug-in, or what it imports, may import them lazily. Their real folders, since a link
    in the package only leads somewhere if its target is in view. Found, not imported."""
    import importlib.util

    found = set()
    for name in ("alertdist.flows", "alertdist.tasks", "alertdist.infra", "alertdist.schemas"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            found.update(os.path.realpath(p) for p in spec.submodule_search_locations)
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


def plugin_paths(spec: str, path: list[str]) -> list[str]:
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
