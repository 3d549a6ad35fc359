"""The sandbox runs hostile programs to completion, records what happened, and keeps the host intact.

Where the OS refuses an isolation layer the result must say so (``isolation``); a test only
accepts damage when the layer that would have prevented it is recorded as missing.
"""

import ast
import os
import secrets
import signal
import socket
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from flexretrofit.evaluation.sandbox import SandboxConfig, run_many, run_program


def _program(source: str) -> str:
    return textwrap.dedent(source).lstrip()


def test_program_that_finishes_passes_and_its_output_is_kept():
    result = run_program("print('hello from the sandbox')\nassert 2 + 2 == 4\n")
    assert result.status == "passed" and result.passed
    assert result.returncode == 0
    assert "hello from the sandbox" in result.stdout_tail
    assert "own-session" in result.isolation and "rlimits" in result.isolation


def test_raising_program_fails_with_its_traceback():
    result = run_program("def check(x):\n    assert x == 1, 'wrong answer'\ncheck(2)\n")
    assert result.status == "failed"
    assert "AssertionError: wrong answer" in result.stderr_tail
    assert 'File "program.py", line 2' in result.stderr_tail


@pytest.mark.parametrize("early_exit", ["import os\nos._exit(0)\n", "import sys\nsys.exit(0)\n"])
def test_exiting_before_the_tests_is_a_failure_not_a_pass(early_exit):
    result = run_program(early_exit + "raise AssertionError('tests would fail')\n")
    assert result.status == "failed"
    if "os._exit" in early_exit:
        assert result.returncode == 0  # the exit code alone would have called this a pass


def test_infinite_loop_times_out_on_the_wall_clock():
    started = time.monotonic()
    result = run_program("while True:\n    pass\n", SandboxConfig(timeout_s=1.0))
    assert result.status == "timeout"
    assert 1.0 <= result.duration_s < 3.0
    assert time.monotonic() - started < 4.0


def test_cpu_limit_stops_a_busy_program_before_the_wall_clock():
    result = run_program("while True:\n    pass\n", SandboxConfig(timeout_s=8.0, cpu_s=1))
    assert result.status == "timeout"
    assert result.returncode in (-signal.SIGXCPU, -signal.SIGKILL)
    assert result.duration_s < 5.0


def test_allocating_ten_gigabytes_fails_with_memory_error():
    result = run_program("buffer = bytearray(10 * 1024**3)\n", SandboxConfig(memory_mb=1024))
    assert result.status == "failed"
    assert "MemoryError" in result.stderr_tail


def _processes_with(token: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if token in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_fork_bomb_is_bounded_and_leaves_no_process_behind():
    # Each child leaves the process group (setsid) and sleeps under a unique name.
    token = f"{secrets.randbelow(10**6)}.{secrets.randbelow(10**6)}"
    bomb = _program(
        f"""
        import os
        forked = 0
        for _ in range(10000):
            try:
                pid = os.fork()
            except OSError:
                break
            if pid == 0:
                os.setsid()
                os.execv("/bin/sleep", ["sleep", "{token}"])
            forked += 1
        print("forked", forked)
        """
    )
    config = SandboxConfig(timeout_s=10.0, max_processes=32)
    started = time.monotonic()
    result = run_program(bomb, config)
    try:
        assert time.monotonic() - started < 8.0
        forked = int(result.stdout_tail.split("forked")[-1])
        assert forked < 32  # RLIMIT_NPROC stopped it (shared by everything running as the same user)
        time.sleep(0.2)
        survivors = _processes_with(f"sleep\x00{token}")
        assert not survivors or "pid-namespace" not in result.isolation
    finally:
        for pid in _processes_with(f"sleep\x00{token}"):
            os.kill(pid, signal.SIGKILL)


def test_exponential_fork_bomb_is_contained():
    result = run_program("import os\nfor _ in range(10000):\n    os.fork()\n", SandboxConfig(timeout_s=10.0))
    assert result.status == "failed"
    assert "BlockingIOError" in result.stderr_tail or "Resource temporarily unavailable" in result.stderr_tail
    assert result.duration_s < 8.0


HOSTILE_FILE_CODE = """
import os
path = {path!r}
print("visible", os.path.exists(path))
for attempt in (lambda: open(path, "w").write("owned"), lambda: os.remove(path)):
    try:
        attempt()
        print("attempt succeeded")
    except OSError as error:
        print("blocked:", type(error).__name__)
"""


@pytest.mark.parametrize(
    "overrides, protections",
    [
        ({}, {"private-tmp", "readonly-root", "unprivileged-user"}),
        ({"private_tmp": False}, {"readonly-root", "unprivileged-user"}),
        ({"private_tmp": False, "readonly_root": False}, {"unprivileged-user"}),
        ({"private_tmp": False, "user": None}, {"readonly-root"}),
    ],
    ids=["default", "no-private-tmp", "user-only", "readonly-root-only"],
)
def test_program_cannot_delete_or_overwrite_a_file_outside_the_sandbox(tmp_path, overrides, protections):
    marker = tmp_path / "marker.txt"
    marker.write_text("precious")
    result = run_program(HOSTILE_FILE_CODE.format(path=str(marker)), SandboxConfig(**overrides))
    assert result.status == "passed", result.stderr_tail  # the harness ran the hostile code to its end
    protected = protections & set(result.isolation)
    if protected:
        assert marker.exists() and marker.read_text() == "precious", (result.stdout_tail, result.isolation)
        assert "attempt succeeded" not in result.stdout_tail
    else:  # no layer that could stop it is available here; it must be on record
        assert not protections & set(result.isolation)
    if overrides.get("user", "nobody") is None and "readonly-root" in protected:
        # Root saw the file, so it was the read-only mount that stopped the write.
        assert "visible True" in result.stdout_tail
        assert "blocked: OSError" in result.stdout_tail


def test_socket_to_localhost_is_refused_or_recorded():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.setblocking(False)
        port = server.getsockname()[1]
        code = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'leak')\n"
        result = run_program(code, SandboxConfig(timeout_s=5.0))
        try:
            connection, _ = server.accept()
            connection.close()
            reached = True
        except BlockingIOError:
            reached = False
    if "network-namespace" in result.isolation:
        assert not reached
        assert result.status == "failed"
        assert "Network is unreachable" in result.stderr_tail or "OSError" in result.stderr_tail
    else:
        assert reached  # no network isolation on this machine, and the result says so


def test_parent_secrets_are_not_visible_to_the_program(monkeypatch):
    secret = secrets.token_hex(12)
    monkeypatch.setenv("FLEXRETROFIT_TEST_SECRET", secret)
    code = _program(
        f"""
        import glob, os
        assert "FLEXRETROFIT_TEST_SECRET" not in os.environ
        assert {secret!r} not in repr(dict(os.environ))
        leaked = []
        for path in glob.glob("/proc/*/environ"):
            try:
                if {secret!r}.encode() in open(path, "rb").read():
                    leaked.append(path)
            except OSError:
                pass
        assert not leaked, leaked
        print(sorted(os.environ))
        """
    )
    result = run_program(code)
    assert result.status == "passed", result.stderr_tail
    names = set(ast.literal_eval(result.stdout_tail.strip().splitlines()[-1]))
    assert names <= {"PATH", "LANG", "LC_ALL", "HOME", "TMPDIR"}


def test_program_gets_a_writable_scratch_directory_that_is_deleted_afterwards(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    code = "open('scratch.txt', 'w').write('x' * 1000)\nimport os\nassert os.path.getsize('scratch.txt') == 1000\n"
    result = run_program(code)
    assert result.status == "passed", result.stderr_tail
    assert list(tmp_path.iterdir()) == []  # the per-run directory is gone


def test_file_size_limit_stops_huge_outputs():
    result = run_program("open('big', 'wb').write(b'0' * (8 * 1024 * 1024))\n", SandboxConfig(max_file_mb=1))
    assert result.status == "failed"


def test_missing_required_isolation_is_an_error_and_the_program_never_runs():
    result = run_program("print('ran')\n", SandboxConfig(require=("no-such-layer",)))
    assert result.status == "error"
    assert "ran" not in result.stdout_tail
    assert "required isolation unavailable" in result.stderr_tail


def test_run_many_keeps_input_order_and_records_every_result():
    programs = ["pass\n", "raise ValueError('x')\n", "while True:\n    pass\n", "print('ok')\n"] * 2
    seen = []
    results = run_many(
        programs, SandboxConfig(timeout_s=1.0), max_workers=2, on_result=lambda i, r: seen.append(i)
    )
    assert [r.status for r in results] == ["passed", "failed", "timeout", "passed"] * 2
    assert sorted(seen) == list(range(len(programs)))
    with pytest.raises(ValueError, match="max_workers"):
        run_many(programs, max_workers=0)
