"""Model-written code runs under bubblewrap: every escape fails and leaves nothing behind.

Each escape runs twice, with both layers (bubblewrap and the audit hook) and with bubblewrap
alone, so that the sandbox is shown to hold without the hook. An escape program exits 0 only
when, from the inside, its escape seemed to work; the test then checks the host itself.
`test_the_escapes_are_real` runs a few of them with no layer at all and sees them succeed,
so these tests can fail. In CI ($CI set) bubblewrap must be installed: nothing skips there.
"""

from __future__ import annotations

import os
import select
import shutil
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from decoptim.eval import sandbox
from decoptim.eval.sandbox import UNSAFE_ENV, SandboxUnavailableError, check_sandbox, run_python
from decoptim.eval.tasks import HumanEvalTask, Problem

if shutil.which("bwrap") is None and not os.environ.get("CI"):
    pytest.skip(
        "bubblewrap (bwrap) is not installed: `apt-get install bubblewrap` (CI fails instead)",
        allow_module_level=True,
    )

LAYERS = pytest.mark.parametrize("audit_hook", [True, False], ids=["bwrap+hook", "bwrap-only"])

# Start (spawn) or run a program through _posixsubprocess.fork_exec, which no audit hook sees.
SPAWN = """
import _posixsubprocess, os

def spawn(*argv):
    argv = [os.fsencode(a) for a in argv]
    errpipe_read, errpipe_write = os.pipe()
    return _posixsubprocess.fork_exec(
        argv, [argv[0]], True, (errpipe_write,), None, None, -1, -1, -1, -1, -1, -1,
        errpipe_read, errpipe_write, False, False, -1, -1, None, -1, -1, None, False)

def run(*argv):
    return os.waitstatus_to_exitcode(os.waitpid(spawn(*argv), 0)[1])
"""


@pytest.fixture
def marker(tmp_path):
    """A unique name; no host path or process carrying it may exist after the test."""
    name = f"decoptim-escape-{uuid.uuid4().hex[:12]}"
    before = set(os.listdir("/tmp"))
    yield name
    created = set(os.listdir("/tmp")) - before
    assert not {f for f in created if name in f or f.startswith("decoptim-sandbox")}
    assert _processes_with(name) == []


def _processes_with(text: str) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if text.encode() in Path(entry.path, "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def _escape(code: str, audit_hook: bool, **limits) -> sandbox.ExecResult:
    start = time.monotonic()
    result = run_python(code, audit_hook=audit_hook, **limits)
    assert time.monotonic() - start < limits.get("timeout", 5.0) + 5
    return result


@LAYERS
def test_posixsubprocess_shell_cannot_write_the_host(audit_hook, marker, tmp_path):
    # The escape: a shell started behind the hook's back writes /tmp/<name>.
    outside = tmp_path / "pwned"
    shell = f"echo pwned > /tmp/{marker} && echo pwned > {outside}"
    code = SPAWN + f"raise SystemExit(run('/bin/sh', '-c', {shell!r}))\n"
    result = _escape(code, audit_hook)
    assert not result.passed and result.status == "failed"
    assert "Directory nonexistent" in result.detail  # the host's tmp_path is not there
    assert not Path(f"/tmp/{marker}").exists() and not outside.exists()


@LAYERS
def test_ctypes_system_cannot_write_the_host(audit_hook, marker, tmp_path):
    outside = tmp_path / "pwned"
    code = (
        "import ctypes\n"
        f"status = ctypes.CDLL(None).system(b'echo pwned > /tmp/{marker} && echo x > {outside}')\n"
        "raise SystemExit(status != 0)\n"
    )
    result = _escape(code, audit_hook)
    assert not result.passed
    expected = "ctypes.dlopen is not allowed" if audit_hook else "Directory nonexistent"
    assert expected in result.detail
    assert not Path(f"/tmp/{marker}").exists() and not outside.exists()


@LAYERS
def test_writes_outside_fail(audit_hook, marker, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    targets = [
        str(tmp_path / "pwned"), f"/usr/lib/{marker}", f"/root/{marker}", f"/{marker}",
        f"/etc/{marker}", f"/dev/{marker}", f"/dev/shm/{marker}", f"/proc/{marker}",
    ]  # fmt: skip
    code = f"""
import os, shutil, sys
done = []
for path in {targets!r}:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, b"pwned")
        done.append(path)
    except OSError as error:
        print("refused", path, error, file=sys.stderr)
for attempt in (lambda: os.remove({str(victim)!r}), lambda: shutil.rmtree({str(tmp_path)!r}),
                lambda: os.rename({str(victim)!r}, {str(victim)!r} + ".moved")):
    try:
        attempt()
        done.append("remove/rename")
    except OSError as error:
        print("refused", error, file=sys.stderr)
print("DONE", done, file=sys.stderr)
raise SystemExit(0 if done else 1)
"""
    result = _escape(code, audit_hook)
    assert not result.passed and "DONE []" in result.detail
    assert victim.read_text() == "keep me" and sorted(os.listdir(tmp_path)) == ["victim"]
    for path in targets[1:]:
        assert not os.path.exists(path), path


@LAYERS
def test_secrets_are_not_readable(audit_hook, marker, tmp_path, monkeypatch):
    cache = Path.home() / ".cache"  # the real one, before HOME moves
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    secret = uuid.uuid4().hex
    (home / ".ssh" / "id_ed25519").write_text(secret)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("DECOPTIM_TEST_TOKEN", secret)
    repo = Path(__file__).resolve().parents[2]
    paths = [
        str(home / ".ssh" / "id_ed25519"), "/etc/shadow", "/etc/passwd",
        str(repo / "README.md"), str(cache), "/proc/1/environ",
    ]  # fmt: skip
    code = f"""
import os, sys
seen = [k for k, v in os.environ.items() if {secret!r} in v]
for path in {paths!r}:
    try:
        data = os.listdir(path) if os.path.isdir(path) else open(path, "rb").read()
        seen.append(path)
        print("READ", path, data, file=sys.stderr)
    except OSError as error:
        print("refused", path, error, file=sys.stderr)
for directory in ("/root", "/home", {str(home)!r}, {str(repo)!r}):
    try:
        print("LISTED", directory, os.listdir(directory), file=sys.stderr)
        seen.append(directory)
    except OSError as error:
        print("refused", directory, error, file=sys.stderr)
print("SEEN", seen, file=sys.stderr)
raise SystemExit(0 if seen else 1)
"""
    result = _escape(code, audit_hook)
    assert not result.passed and "SEEN []" in result.detail
    assert secret not in result.detail
    assert "refused /root [Errno 13] Permission denied" in result.detail


@LAYERS
def test_no_network_to_the_host(audit_hook, marker):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        code = f"""
import socket, sys
reached = []
for address in [("127.0.0.1", {port}), ("10.255.255.1", 80), ("1.1.1.1", 53)]:
    try:
        socket.create_connection(address, timeout=1).close()
        reached.append(address)
    except OSError as error:
        print("refused", address, error, file=sys.stderr)
raise SystemExit(0 if reached else 1)
"""
        result = _escape(code, audit_hook)
        readable, _, _ = select.select([listener], [], [], 0.2)
    assert not result.passed
    assert readable == []  # nothing ever connected to the listener
    expected = "socket" if audit_hook else "Connection refused"
    assert expected in result.detail


@LAYERS
def test_fork_bomb_is_bounded_and_killed(audit_hook, marker):
    # A fork bomb in a second interpreter started behind the hook's back, while the program
    # waits: only the timeout ends it. Its processes carry the marker in their command line.
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    code = SPAWN + f"import sys, time\nspawn(sys.executable, '-c', {bomb!r}, {marker!r})\n"
    code += "while True:\n    time.sleep(1)\n"
    counts: list[int] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            counts.append(len(_processes_with(marker)))
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    start = time.monotonic()
    try:
        result = run_python(code, timeout=2.0, max_processes=8, audit_hook=audit_hook)
    finally:
        done.set()
        watcher.join()
    assert result.status == "timeout" and not result.passed
    assert time.monotonic() - start < 6
    assert 2 <= max(counts) <= 8  # it ran, and never beyond the limit
    assert _processes_with(marker) == []  # gone when run_python returns


@LAYERS
def test_background_processes_die_with_the_program(audit_hook, marker):
    # A detached child outliving a program that exits at once is killed with the sandbox.
    seconds = f"1000.{int(uuid.uuid4().int % 10**9):09d}"
    code = SPAWN + f"spawn('/bin/sh', '-c', 'sleep {seconds} & sleep {seconds}')\n"
    result = run_python(code, audit_hook=audit_hook)
    assert result.passed  # the program itself exited at once, with status 0
    assert _processes_with(seconds) == []


@LAYERS
def test_no_nested_user_namespace(audit_hook, marker):
    # In a user namespace of its own a program could mount a tmpfs beyond its disk limit.
    code = SPAWN + (
        "raise SystemExit(run('/usr/bin/unshare', '-Urm', 'mount', '-t', 'tmpfs', 'x', '/tmp'))\n"
    )
    result = _escape(code, audit_hook)
    assert not result.passed
    assert "unshare failed: Operation not permitted" in result.detail


@LAYERS
def test_cannot_kill_the_parent_or_host_processes(audit_hook, marker):
    victim = subprocess.Popen(["sleep", "60"])
    try:
        code = f"""
import os, signal, sys, time
killed = []
for pid in (os.getppid(), {victim.pid}, {os.getpid()}, {os.getppid()}):
    try:
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)
    except OSError as error:
        print("refused", pid, error, file=sys.stderr)
try:
    os.kill(-1, signal.SIGKILL)  # everything this user may signal
except OSError as error:
    print("refused -1", error, file=sys.stderr)
time.sleep(0.2)
print("KILLED", killed, file=sys.stderr)
raise SystemExit(0 if set(killed) - {{os.getppid()}} else 1)
"""
        result = _escape(code, audit_hook)
        assert not result.passed
        time.sleep(0.2)
        assert victim.poll() is None  # the host process is alive (and so is this one)
    finally:
        victim.kill()
        victim.wait()


@LAYERS
def test_memory_exhaustion_hits_the_limit(audit_hook, marker):
    code = """
import sys
chunks = []
try:
    while True:
        chunks.append(bytearray(32 << 20))
except MemoryError:
    print("GOT", 32 * len(chunks), "MB", file=sys.stderr)
    raise
"""
    result = _escape(code, audit_hook, memory_mb=256)
    assert result.status == "failed" and "MemoryError" in result.detail
    got = int(result.detail.split("GOT ")[1].split()[0])
    assert 0 < got <= 256


@LAYERS
def test_disk_exhaustion_hits_the_limits(audit_hook, marker):
    code = """
import errno, os, sys
total, errors = 0, set()
for number, directory in enumerate(("/tmp", os.getcwd(), os.environ["HOME"], "/dev/shm", "/")):
    for index in range(64):
        try:
            with open(os.path.join(directory, f"fill{number}-{index}"), "wb") as handle:
                while True:
                    handle.write(b"x" * (256 << 10))
                    handle.flush()
                    total += 256 << 10
        except OSError as error:
            errors.add(errno.errorcode.get(error.errno, "refused"))
            if error.errno != errno.EFBIG:
                break
print("WROTE", total, sorted(errors), file=sys.stderr)
raise SystemExit(0 if total > 8 << 20 else 1)
"""
    result = _escape(code, audit_hook, max_file_mb=2, disk_mb=8)
    assert not result.passed
    assert "EFBIG" in result.detail and "ENOSPC" in result.detail
    assert int(result.detail.split("WROTE ")[1].split()[0]) <= 8 << 20


def test_the_escapes_are_real(tmp_path, monkeypatch):
    # With no layer at all the same escapes work: the tests above would see them.
    home = tmp_path / "home"
    home.mkdir()
    (home / "secret").write_text("s3cret")
    monkeypatch.setenv("HOME", str(home))
    outside = tmp_path / "pwned"
    code = SPAWN + (
        f"run('/bin/sh', '-c', 'echo pwned > {outside}')\n"
        f"print(open({str(home / 'secret')!r}).read(), file=__import__('sys').stderr)\n"
    )
    with pytest.warns(RuntimeWarning, match="UNSAFE"):
        result = run_python(code, unsafe_no_sandbox=True, audit_hook=False)
    assert result.passed and "s3cret" in result.detail
    assert outside.read_text() == "pwned\n"


def test_programs_still_run_and_write_their_own_files():
    code = """
import os, sys, tempfile, hashlib, json, math
open("scratch.txt", "w").write("ok")
assert open("scratch.txt").read() == "ok"
with tempfile.NamedTemporaryFile() as handle:
    handle.write(b"x")
print(hashlib.sha256(b"x").hexdigest()[:8], json.dumps(math.pi), os.getcwd(), file=sys.stderr)
"""
    result = run_python(code)
    assert result.passed, result.detail
    assert result.detail.startswith("2d711642 3.14159") and "/tmp" in result.detail
    assert not run_python("raise SystemExit(3)").passed
    assert "ZeroDivisionError" in run_python("1 / 0").detail
    slow = run_python("while True:\n    pass", timeout=1.0)
    assert slow == sandbox.ExecResult(False, "timeout", "exceeded 1.0 s")
    # The harness itself can still use the network stack afterwards.
    a, b = socket.socketpair()
    a.sendall(b"x")
    assert b.recv(1) == b"x"


def test_humaneval_grades_in_the_sandbox():
    problem = Problem(
        "demo/0",
        'def add(a: int, b: int) -> int:\n    """Return a + b."""\n',
        "add",
        {"test": "def check(candidate):\n    assert candidate(2, 3) == 5\n"},
    )
    task = HumanEvalTask(timeout=2.0)
    assert task.grade(problem, "    return a + b\n").correct
    wrong = task.grade(problem, "    return a - b\n")
    assert not wrong.correct and wrong.answer == "failed"
    slow = task.grade(problem, "    while True:\n        pass\n")
    assert not slow.correct and slow.answer == "timeout"
    escape = f"    open('{Path.home()}/decoptim-pwned', 'w')\n    return a + b\n"
    assert not task.grade(problem, escape).correct
    assert not (Path.home() / "decoptim-pwned").exists()


def test_refuses_without_bubblewrap(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on it
    monkeypatch.delenv(UNSAFE_ENV, raising=False)
    with pytest.raises(SandboxUnavailableError, match="apt-get install bubblewrap") as error:
        run_python("pass")
    assert UNSAFE_ENV in str(error.value) and "unsafe_no_sandbox=True" in str(error.value)
    with pytest.raises(SandboxUnavailableError, match="apt-get install bubblewrap"):
        HumanEvalTask().load(str(tmp_path / "never-read.jsonl"))
    # The opt-outs, loudly.
    with pytest.warns(RuntimeWarning, match="WITHOUT a sandbox"):
        assert run_python("assert 1 + 1 == 2", unsafe_no_sandbox=True).passed
    monkeypatch.setenv(UNSAFE_ENV, "1")
    with pytest.warns(RuntimeWarning, match=UNSAFE_ENV):
        assert check_sandbox() is None
    monkeypatch.setenv(UNSAFE_ENV, "yes")
    with pytest.raises(ValueError, match=f"{UNSAFE_ENV}='yes'"):
        run_python("pass")


@pytest.mark.parametrize(
    "script,message",
    [
        ('echo "bubblewrap 0.6.1"', "bubblewrap 0.8.0 or newer is needed"),
        (
            '[ "$1" = --version ] && echo "bubblewrap 0.8.0" && exit 0\n'
            'echo "bwrap: No permissions to create new namespace" >&2; exit 1',
            "No permissions to create new namespace",
        ),
    ],
    ids=["too old", "cannot start"],
)
def test_refuses_a_bubblewrap_that_cannot_sandbox(script, message, tmp_path, monkeypatch):
    fake = tmp_path / "bwrap"
    fake.write_text(f"#!/bin/sh\n{script}\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    with pytest.raises(SandboxUnavailableError, match=message):
        run_python("pass")


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"timeout": 0}, "timeout=0"),
        ({"memory_mb": 0}, "memory_mb=0"),
        ({"disk_mb": 1.5}, "disk_mb=1.5"),
        ({"max_processes": True}, "max_processes=True"),
    ],
)
def test_bad_limits_name_the_parameter(kwargs, message):
    with pytest.raises(ValueError, match=message):
        run_python("pass", **kwargs)


def test_ci_has_bubblewrap():
    if os.environ.get("CI"):
        assert shutil.which("bwrap"), "CI must install bubblewrap (make test does, as root)"
    check_sandbox()  # raises SandboxUnavailableError when it cannot sandbox here
