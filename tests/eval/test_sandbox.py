"""Model-written code is contained; each failure is the sample's, never the harness's."""

import os
import socket
import time
from pathlib import Path

import pytest

from decoptim.eval.sandbox import run_python


@pytest.mark.parametrize(
    "name,code,status,message",
    [
        ("infinite loop", "while True:\n    pass", "timeout", "exceeded"),
        ("fork bomb", "import os\nwhile True:\n    os.fork()", "failed", "os.fork is not allowed"),
        ("subprocess", "import subprocess\nsubprocess.run(['true'])", "failed", "subprocess.Popen"),
        (
            "write outside",
            "open('/tmp/decoptim-escape', 'w').write('x')",
            "failed",
            "outside the sandbox",
        ),
        (
            "delete outside",
            "import os\nos.remove('/tmp/decoptim-victim')",
            "failed",
            "outside the sandbox",
        ),
        (
            "network",
            "import socket\nsocket.create_connection(('127.0.0.1', 9))",
            "failed",
            "socket",
        ),
        ("memory", "x = bytearray(8 * 1024 ** 3)", "failed", "MemoryError"),
    ],
)
def test_contained(name, code, status, message, tmp_path):
    victim = "/tmp/decoptim-victim"
    with open(victim, "w") as handle:
        handle.write("keep me")
    before = set(os.listdir("/tmp"))
    start = time.time()
    result = run_python(code, timeout=2.0)
    assert result.status == status and not result.passed
    assert message in result.detail
    assert time.time() - start < 10
    assert not os.path.exists("/tmp/decoptim-escape")
    assert Path(victim).read_text() == "keep me"
    leftovers = {f for f in set(os.listdir("/tmp")) - before if f.startswith("decoptim-sandbox")}
    assert leftovers == set()
    os.remove(victim)


def test_harness_unharmed_and_writes_inside_allowed():
    assert run_python(
        "open('scratch.txt', 'w').write('ok')\nassert open('scratch.txt').read() == 'ok'"
    ).passed
    assert run_python("assert 1 + 1 == 2").passed
    assert not run_python("raise SystemExit(3)").passed
    # The parent process can still use the network stack and fork after all of that.
    a, b = socket.socketpair()
    a.sendall(b"x")
    assert b.recv(1) == b"x"
    with pytest.raises(ValueError, match="timeout"):
        run_python("pass", timeout=0)
