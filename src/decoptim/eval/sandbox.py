"""Run untrusted Python (model-written code) inside a bubblewrap sandbox.

Each program runs under `bwrap` (the `bubblewrap` package) in its own mount, PID, network,
IPC and UTS namespaces. It sees a read-only system (/usr and the interpreter's own prefix),
a private size-limited tmpfs at /tmp (its working directory, HOME and TMPDIR; gone when it
ends), its own /proc and a minimal /dev, and nothing else: no home directory, no /root,
/etc, /work, caches or repositories, no network (only its own loopback), no host
processes. Run as root, the program drops to a fresh unprivileged uid that owns no file on
the host. Limits: CPU time, address space, file size, number of processes, the tmpfs size,
and a wall-clock timeout after which the whole sandbox (every process in its PID
namespace) is killed; run_python returns only once it is gone. The audit hook of
sandbox_guard.py stays as a second layer inside.

Without bubblewrap, run_python refuses (SandboxUnavailableError says how to install it)
unless the caller opts out with `unsafe_no_sandbox=True` or DECOPTIM_UNSAFE_NO_SANDBOX=1;
then the program runs as the user with only rlimits and the audit hook, which model-written
code can escape. See docs/sandbox.md.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import secrets
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

GUARD = Path(__file__).with_name("sandbox_guard.py").read_text()
UNSAFE_ENV = "DECOPTIM_UNSAFE_NO_SANDBOX"
INSTALL = "install it with `apt-get install bubblewrap` (Debian/Ubuntu; `dnf install bubblewrap`)"
MIN_BWRAP = (0, 8, 0)  # --size for tmpfs, --perms for --dir, --disable-userns
# Read-only system directories (symlinks on merged-/usr systems are recreated as symlinks).
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/localtime")  # the loader's cache and the time zone
# When run as root, each program gets a uid drawn from here: a uid that owns no host file.
UID_RANGE = (1_500_000_000, 2_000_000_000)
SANDBOX_DIR = "/tmp"
STDERR_TAIL = 2000
# For the seccomp filter: machine -> (AUDIT_ARCH, clone, unshare, clone3) syscall numbers.
SYSCALLS = {"x86_64": (0xC000003E, 56, 272, 435), "aarch64": (0xC00000B7, 220, 97, 435)}
CLONE_NEWUSER = 0x10000000


class SandboxUnavailableError(RuntimeError):
    """Code execution was refused: bubblewrap is missing or cannot start a sandbox here."""


@dataclass(frozen=True)
class ExecResult:
    passed: bool
    status: str  # "passed", "failed", "timeout"
    detail: str  # the tail of stderr


def run_python(
    code: str,
    timeout: float = 5.0,
    memory_mb: int = 1024,
    max_file_mb: int = 16,
    disk_mb: int = 64,
    max_processes: int = 8,
    *,
    unsafe_no_sandbox: bool | None = None,
    audit_hook: bool = True,
) -> ExecResult:
    """Execute `code`; passed means it exited with status 0 within the limits.

    memory_mb bounds each process's address space, max_file_mb each file, disk_mb all the
    files the program writes together, max_processes the processes it runs at once.
    unsafe_no_sandbox=None reads DECOPTIM_UNSAFE_NO_SANDBOX. audit_hook=False leaves
    bubblewrap as the only layer (the tests use it to show that it holds alone).
    """
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0, got timeout={timeout}")
    counts = dict(memory_mb=memory_mb, max_file_mb=max_file_mb, disk_mb=disk_mb)
    for name, value in dict(counts, max_processes=max_processes).items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {name}={value!r}")
    bwrap = check_sandbox(unsafe_no_sandbox)
    limits = {
        "RLIMIT_CPU": int(timeout) + 1,
        "RLIMIT_AS": memory_mb << 20,
        "RLIMIT_FSIZE": max_file_mb << 20,
        "RLIMIT_NPROC": max_processes,
        "RLIMIT_CORE": 0,
    }
    program = _prelude(_drop_to() if bwrap else None, limits)
    program += (GUARD if audit_hook else "") + "\n" + code
    if bwrap:
        return _run_sandboxed(bwrap, program, timeout, disk_mb << 20)
    return _run_unsafe(program, timeout)


def check_sandbox(unsafe_no_sandbox: bool | None = None) -> str | None:
    """The bwrap executable that will run programs, or None when the caller opted out.

    Raises SandboxUnavailableError when bubblewrap is missing, too old or cannot create a
    sandbox here (checked once per process), unless the caller opted out. Call it before
    a long run so that it refuses before any work is done.
    """
    if unsafe_no_sandbox is None:
        unsafe_no_sandbox = _unsafe_from_env()
    if unsafe_no_sandbox:
        warnings.warn(
            "UNSAFE: running model-written code WITHOUT a sandbox (unsafe_no_sandbox / "
            f"{UNSAFE_ENV}); it can read and change everything this user can",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailableError(
            "code execution needs bubblewrap (bwrap), which is not installed: "
            f"{INSTALL}. To run model-written code without any sandbox anyway, at your own "
            f"risk, set {UNSAFE_ENV}=1 or pass unsafe_no_sandbox=True"
        )
    _probe(bwrap)
    return bwrap


def _unsafe_from_env() -> bool:
    value = os.environ.get(UNSAFE_ENV, "")
    if value not in ("", "0", "1"):
        raise ValueError(f"{UNSAFE_ENV} must be 1 or 0, got {UNSAFE_ENV}={value!r}")
    return value == "1"


@functools.cache
def _probe(bwrap: str) -> None:
    """Raise SandboxUnavailableError unless `bwrap` is recent enough and can run a program here."""
    version = subprocess.run([bwrap, "--version"], capture_output=True, text=True).stdout
    numbers = tuple(
        int(part) for part in (version.split() or ["0"])[-1].split(".") if part.isdigit()
    )
    if numbers < MIN_BWRAP:
        raise SandboxUnavailableError(
            f"bubblewrap {'.'.join(map(str, MIN_BWRAP))} or newer is needed, {bwrap} is "
            f"{version.strip()!r}: {INSTALL} from a newer release"
        )
    # Imports after the prelude: the interpreter's files must be readable by the sandbox's uid.
    program = _prelude(_drop_to(), {}) + "import decimal, hashlib, json"
    result = _run_sandboxed(bwrap, program, 30.0, 1 << 20)
    if not result.passed:
        raise SandboxUnavailableError(
            f"bubblewrap ({bwrap}) cannot start a sandbox on this machine (it needs user "
            f"or PID namespaces, or root): {result.status}: {result.detail.strip()}"
        )


def _drop_to() -> int | None:
    """Run as root, a fresh uid for the program to drop to (None otherwise)."""
    if os.geteuid() != 0:
        return None
    return UID_RANGE[0] + secrets.randbelow(UID_RANGE[1] - UID_RANGE[0])


def _prelude(uid: int | None, limits: dict[str, int]) -> str:
    """Trusted first lines of every program: drop root for `uid`, then set the rlimits."""
    lines = ["import os as _os, resource as _resource"]
    if uid is not None:
        lines.append(
            f"_os.setgroups([]); _os.setresgid({uid}, {uid}, {uid}); "
            f"_os.setresuid({uid}, {uid}, {uid})"
        )
    lines.append(f"for _name, _value in {limits!r}.items():")
    lines.append("    _resource.setrlimit(getattr(_resource, _name), (_value, _value))")
    lines.append("del _os, _resource")
    return "\n".join(lines) + "\n"


def _interpreter() -> str:
    """The base interpreter (not a virtual environment's), which needs only its prefix."""
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


def _seccomp_filter() -> bytes:
    """A seccomp BPF program: no new user namespace (unshare or clone with CLONE_NEWUSER),
    clone3 answers ENOSYS (its flags cannot be inspected; libc falls back to clone), and no
    system call of another ABI (x32, 32-bit). The rest is allowed."""
    machine = platform.machine()
    if machine not in SYSCALLS:
        raise SandboxUnavailableError(
            f"no seccomp filter for this machine ({machine!r}); the sandbox supports "
            f"{sorted(SYSCALLS)}"
        )
    arch, clone, unshare, clone3 = SYSCALLS[machine]
    load, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    allow, eperm, enosys = 0x7FFF0000, 0x00050000 | 1, 0x00050000 | 38
    program = [  # (code, jump if true, jump if false, k); jumps skip that many instructions
        (load, 0, 0, 4),  # 0: the ABI
        (jeq, 0, 9, arch),  # 1: another ABI -> 11
        (load, 0, 0, 0),  # 2: the system call number
        (jge, 7, 0, 0x40000000),  # 3: x32 -> 11
        (jeq, 7, 0, clone3),  # 4: -> 12
        (jeq, 2, 0, unshare),  # 5: -> 8
        (jeq, 1, 0, clone),  # 6: -> 8
        (ret, 0, 0, allow),  # 7
        (load, 0, 0, 16),  # 8: the low half of the first argument (flags)
        (jset, 1, 0, CLONE_NEWUSER),  # 9: -> 11
        (ret, 0, 0, allow),  # 10
        (ret, 0, 0, eperm),  # 11
        (ret, 0, 0, enosys),  # 12
    ]
    return b"".join(struct.pack("=HBBI", code, jt, jf, k) for code, jt, jf, k in program)


def _bwrap_args(
    interpreter: str, program_fd: int, seccomp_fd: int, info_fd: int, disk_bytes: int
) -> list[str]:
    args = [
        "--die-with-parent", "--new-session", "--hostname", "sandbox",
        "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
    ]  # fmt: skip
    if os.geteuid() == 0:
        # No user namespace: the program's prelude drops to an unprivileged host uid, which
        # needs these two capabilities once; setresuid clears them and no_new_privs holds.
        args += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        args += ["--unshare-user", "--disable-userns"]
    for path in SYSTEM_DIRS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    args += ["--perms", "0111", "--dir", "/etc"]  # reachable by path, not listable
    for path in SYSTEM_FILES:
        args += ["--ro-bind-try", path, path]
    bound = [path for path in SYSTEM_DIRS if os.path.isdir(path) and not os.path.islink(path)]
    created: set[str] = set()
    for prefix in sorted({sys.base_prefix, sys.base_exec_prefix, os.path.dirname(interpreter)}):
        prefix = os.path.realpath(prefix)
        if any(_within(prefix, root) for root in bound):
            continue
        # The prefix may sit in a home directory (pyenv): its parents are created empty and
        # unlistable (mode 0111), so only the prefix itself can be read.
        for parent in reversed(Path(prefix).parents[:-1]):
            if str(parent) not in created:
                created.add(str(parent))
                args += ["--perms", "0111", "--dir", str(parent)]
        args += ["--ro-bind", prefix, prefix]
        bound.append(prefix)
    args += [
        "--proc", "/proc", "--dev", "/dev", "--remount-ro", "/dev",
        "--perms", "1777", "--size", str(disk_bytes), "--tmpfs", SANDBOX_DIR,
        "--file", str(program_fd), f"{SANDBOX_DIR}/program.py",
        "--remount-ro", "/", "--chdir", SANDBOX_DIR, "--info-fd", str(info_fd),
        "--seccomp", str(seccomp_fd),
    ]  # fmt: skip
    return args


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _run_sandboxed(bwrap: str, program: str, timeout: float, disk_bytes: int) -> ExecResult:
    interpreter = _interpreter()
    seccomp = _seccomp_filter()
    fds = [_memfd("program.py", program.encode()), _memfd("seccomp", seccomp), *os.pipe()]
    program_fd, seccomp_fd, info_read, info_write = fds
    try:
        args = _bwrap_args(interpreter, program_fd, seccomp_fd, info_write, disk_bytes)
        command = [bwrap, *args, "--", interpreter, "-I", "-B", f"{SANDBOX_DIR}/program.py"]
        return _execute(
            command, "/", SANDBOX_DIR, timeout, (program_fd, seccomp_fd, info_write), info_read
        )
    finally:
        for fd in fds:
            os.close(fd)


def _memfd(name: str, data: bytes) -> int:
    fd = os.memfd_create(name)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _run_unsafe(program: str, timeout: float) -> ExecResult:
    with tempfile.TemporaryDirectory(prefix="decoptim-sandbox-") as workdir:
        script = Path(workdir) / "program.py"
        script.write_text(program)
        return _execute([sys.executable, "-I", "-B", str(script)], workdir, workdir, timeout)


def _execute(
    command: list[str],
    cwd: str,
    home: str,
    timeout: float,
    pass_fds: tuple[int, ...] = (),
    info_fd: int | None = None,
) -> ExecResult:
    """Run `command` in a session of its own; at the end its process group is killed.

    With bwrap's --info-fd report (`info_fd`), a pidfd on the sandbox's init (bwrap's
    child, taken while bwrap still holds it) tells when the kernel has killed its whole
    PID namespace: this returns only after that.
    """
    env = {"PATH": "/usr/bin:/bin", "HOME": home, "TMPDIR": home, "LANG": "C.UTF-8"}
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=stderr, pass_fds=pass_fds, start_new_session=True,
        )  # fmt: skip
        timed_out = True
        try:
            timed_out = _wait(process, timeout)
        finally:
            init = _child_pidfd(info_fd) if timed_out and info_fd is not None else None
            _kill_group(process)
            _await_exit(init)
        return _result(process.returncode, timed_out, timeout, stderr)


def _wait(process: subprocess.Popen, timeout: float) -> bool:
    """Wait for the process; True when it ran past `timeout` (it is still running then)."""
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return True
    return False


def _result(returncode: int, timed_out: bool, timeout: float, stderr: BinaryIO) -> ExecResult:
    if timed_out:
        return ExecResult(False, "timeout", f"exceeded {timeout} s")
    stderr.seek(max(0, os.fstat(stderr.fileno()).st_size - STDERR_TAIL))
    tail = stderr.read().decode("utf-8", "replace")
    if returncode == 0:
        return ExecResult(True, "passed", tail)
    return ExecResult(False, "failed", tail or f"exit status {returncode}")


def _child_pidfd(info_fd: int) -> int | None:
    """A pidfd on the sandbox's init, from bwrap's --info-fd report (None if it has none)."""
    readable, _, _ = select.select([info_fd], [], [], 0)
    if not readable:
        return None
    try:
        child = json.loads(os.read(info_fd, 4096).decode())["child-pid"]
        return os.pidfd_open(int(child))
    except (ValueError, KeyError, TypeError, OSError):
        return None


def _await_exit(pidfd: int | None, limit: float = 10.0) -> None:
    if pidfd is None:
        return
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        poller.poll(limit * 1000)
    finally:
        os.close(pidfd)


def _kill_group(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    if process.poll() is None:
        process.kill()
    process.wait()
