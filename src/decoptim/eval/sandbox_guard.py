"""Prepended to every sandboxed program (see sandbox.py); not imported by decoptim itself.

An audit hook refuses network sockets, new processes and writes outside the working
directory. It is installed before the program's own code runs and cannot be removed.
"""

import os
import sys

_ROOT = os.path.realpath(os.getcwd())
_BLOCKED = (
    "socket.", "os.fork", "os.forkpty", "os.exec", "os.posix_spawn", "os.spawn", "os.system",
    "subprocess.Popen", "os.kill", "os.killpg", "pty.spawn", "ctypes.dlopen",
)  # fmt: skip
_PATH_EVENTS = {
    "os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.link",
    "os.symlink", "os.truncate", "os.utime", "shutil.rmtree", "shutil.copyfile",
}  # fmt: skip
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT


def _inside(path) -> bool:
    if isinstance(path, int):  # an already-open file descriptor
        return True
    try:
        real = os.path.realpath(os.fsdecode(path))
    except TypeError:
        return False
    return real == _ROOT or real.startswith(_ROOT + os.sep)


def _writes(event: str, args: tuple) -> bool:
    if event != "open" or len(args) < 2:
        return False
    mode, flags = args[1], args[2] if len(args) > 2 else 0
    by_mode = bool(mode) and any(c in str(mode) for c in "wax+")
    return by_mode or (isinstance(flags, int) and bool(flags & _WRITE_FLAGS))


def _guard(event: str, args: tuple) -> None:
    if event.startswith(_BLOCKED) and event != "socket.gethostname":
        raise PermissionError(f"sandbox: {event} is not allowed")
    if _writes(event, args) and not _inside(args[0]):
        raise PermissionError(f"sandbox: writing {args[0]!r} outside the sandbox")
    if event in _PATH_EVENTS:
        paths = [a for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))]
        if not all(_inside(p) for p in paths):
            raise PermissionError(f"sandbox: {event} outside the sandbox")


sys.addaudithook(_guard)
del _guard
