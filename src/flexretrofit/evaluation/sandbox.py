"""Run untrusted Python programs (model-written code plus its tests) in an isolated child process.

Each program runs in a fresh ``python -I -S`` process started by :func:`run_program`:

- its own session and process group, killed with ``os.killpg`` when it ends, always;
- a wall-clock timeout, plus resource limits (address space, CPU seconds, processes, file size,
  open files, no core dumps);
- an environment built from scratch (``PATH``, ``LANG``, ``LC_ALL``, ``HOME``, ``TMPDIR``), so no
  secret of the parent is inherited;
- a fresh temporary directory for its input and output, deleted afterwards;
- on Linux, new namespaces (``unshare``): no network (only a down loopback), its own PID space (the
  kernel kills every leftover process when the program exits, even ones that left the process
  group), a read-only view of the file system with private size-capped ``/tmp`` and ``/dev/shm``
  and a private ``/proc``;
- when started as root, the program runs as ``nobody`` with no capabilities and ``no_new_privs``
  (root ignores file permissions and process limits, so this is what stops it from deleting files
  or fork-bombing the machine).

Whatever the OS refuses is skipped and recorded in :attr:`SandboxResult.isolation` (a warning is
logged once); ``SandboxConfig(require=(...))`` turns a missing layer into an ``"error"`` result instead.

Success is decided by a random nonce printed by the harness after the program returns, never by
the exit code: ``os._exit(0)`` before the tests ran is a failure. The program runs in the same
interpreter as that harness, so a program written to cheat (walking stack frames to find the
nonce) can fake a pass; the process and namespace isolation, not the harness, is the security
barrier. The child side lives in ``_sandbox_child.py``.

Not covered: the program can read world-readable files (source trees, ``/etc``); it shares the
kernel (no seccomp filter, so a kernel exploit escapes) and the CPUs (no cgroup shares: a busy
program slows its neighbours until its CPU limit); ``RLIMIT_NPROC`` is per account, shared by all
sandboxes running as ``nobody``. ``SandboxConfig(user=None)`` under root keeps root inside the
namespaces, which can still open raw devices: for debugging only. Without namespaces (most
containers, macOS) only the limits, the process group and, under root, the account switch remain.
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

CHILD_SCRIPT = Path(__file__).with_name("_sandbox_child.py")
STATUSES = ("passed", "failed", "timeout", "error")
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
_TAIL_BYTES = 64 * 1024
_warned_layers: set[str] = set()


@dataclass(frozen=True)
class SandboxConfig:
    """Limits and isolation for one program run.

    Args:
        timeout_s: wall-clock limit; the run is killed and reported as ``"timeout"`` after it.
        memory_mb: address-space limit (``RLIMIT_AS``).
        cpu_s: CPU-seconds limit (``RLIMIT_CPU``); default ``ceil(timeout_s) + 1``.
        max_processes: ``RLIMIT_NPROC``. The kernel counts every process of the account the program
            runs as, so concurrent sandboxes running as ``nobody`` share it.
        max_file_mb: ``RLIMIT_FSIZE``; also caps what the program can print.
        max_open_files: ``RLIMIT_NOFILE``.
        scratch_mb: size of the private ``/tmp`` (and ``/dev/shm``) tmpfs.
        user: account to run as when started as root (name or uid); ``None`` keeps root (not advised).
        isolate_network: put the program in an empty network namespace.
        readonly_root: mount the whole file system read-only inside the sandbox.
        private_tmp: mount private tmpfs over ``/tmp`` and ``/dev/shm``.
        python: interpreter for the program; default ``sys.executable`` (run with ``-I -S``, so
            only the standard library is importable).
        require: isolation layers (names as in :attr:`SandboxResult.isolation`) without which the
            run must not happen; a missing one gives status ``"error"``.
        tail_chars: how much of stdout / stderr to keep in the result.
    """

    timeout_s: float = 10.0
    memory_mb: int = 2048
    cpu_s: int | None = None
    max_processes: int = 64
    max_file_mb: int = 64
    max_open_files: int = 64
    scratch_mb: int = 64
    user: str | int | None = "nobody"
    isolate_network: bool = True
    readonly_root: bool = True
    private_tmp: bool = True
    python: str | None = None
    require: tuple[str, ...] = ()
    tail_chars: int = 2000

    def __post_init__(self) -> None:
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {self.timeout_s}")
        for name in ("memory_mb", "max_processes", "max_file_mb", "max_open_files", "scratch_mb"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class SandboxResult:
    """Outcome of one program.

    ``status``: ``"passed"`` (ran to the end), ``"failed"`` (raised, exited early, crashed, hit a
    memory/file/process limit), ``"timeout"`` (wall-clock or CPU limit) or ``"error"`` (the sandbox
    itself could not run it). ``isolation`` lists the layers that were in place, e.g.
    ``("own-session", "mount-namespace", "pid-namespace", "network-namespace", ..., "rlimits",
    "unprivileged-user", "no-new-privs")``.
    """

    status: str
    returncode: int | None
    duration_s: float
    stdout_tail: str
    stderr_tail: str
    isolation: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def run_program(source: str, config: SandboxConfig | None = None) -> SandboxResult:
    """Run the Python program ``source`` in a sandbox and report how it ended.

    The program passes when it runs to its end without raising (a HumanEval program ends with
    ``check(entry_point)``, whose asserts raise on a wrong answer).
    """
    if os.name != "posix":
        raise OSError("the sandbox needs a POSIX system (Linux for full isolation); run evaluation on Linux.")
    config = config or SandboxConfig()
    uid, gid = _resolve_user(config.user)
    nonce = secrets.token_hex(16)
    workdir = Path(tempfile.mkdtemp(prefix="flexretrofit-sandbox-"))  # mode 0700, ours only
    try:
        scratch = workdir / "scratch"
        scratch.mkdir()
        if uid is not None and os.geteuid() == 0:
            os.chown(scratch, uid, gid)
        (workdir / "stdin").write_bytes(nonce.encode() + b"\n" + source.encode("utf-8"))
        with (
            open(workdir / "stdin", "rb") as stdin,
            open(workdir / "stdout", "w+b") as stdout,
            open(workdir / "stderr", "w+b") as stderr,
            open(workdir / "report", "w+b") as report,
        ):
            child_config = _child_config(config, uid, gid, scratch, report.fileno())
            command = [
                config.python or sys.executable,
                "-I",
                "-S",
                str(CHILD_SCRIPT),
                json.dumps(child_config),
            ]
            started = time.monotonic()
            try:
                process = subprocess.Popen(
                    command,
                    stdin=stdin,
                    stdout=stdout,
                    stderr=stderr,
                    pass_fds=(report.fileno(),),
                    env=_minimal_env(),
                    cwd=workdir,
                    start_new_session=True,
                )
            except OSError as error:
                return SandboxResult("error", None, 0.0, "", f"could not start the sandbox: {error}")
            try:
                finished = _wait_for_exit(process.pid, config.timeout_s)
            finally:
                _kill_group(process.pid)  # before reaping, so the group id cannot be reused yet
                process.wait()
            duration = time.monotonic() - started
            stdout_text = _tail(stdout, config.tail_chars + len(nonce) + 2)
            stderr_text = _tail(stderr, config.tail_chars)
            achieved = _read_report(report)
        return _classify(
            process.returncode, not finished, nonce, stdout_text, stderr_text, achieved, duration, config
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run_many(
    sources: Sequence[str],
    config: SandboxConfig | None = None,
    max_workers: int = 2,
    on_result: Callable[[int, SandboxResult], None] | None = None,
) -> list[SandboxResult]:
    """Run many programs with ``max_workers`` in parallel; results come back in input order.

    Threads only wait on child processes, so the pool costs no CPU of its own. ``on_result(index,
    result)`` is called as each one finishes (from a worker thread), e.g. for progress or for writing
    rows as they complete.
    """
    if max_workers < 1:
        raise ValueError(f"max_workers must be >= 1, got {max_workers}")
    results: list[SandboxResult | None] = [None] * len(sources)

    def run_one(index: int) -> None:
        result = run_program(sources[index], config)
        results[index] = result
        if on_result is not None:
            on_result(index, result)

    with ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="sandbox") as pool:
        for future in [pool.submit(run_one, index) for index in range(len(sources))]:
            future.result()
    return results  # type: ignore[return-value]


def probe_isolation(config: SandboxConfig | None = None) -> tuple[str, ...]:
    """The isolation layers this machine gives a sandboxed program (runs one trivial program)."""
    return run_program("pass\n", config).isolation


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------
def _resolve_user(user: str | int | None) -> tuple[int | None, int | None]:
    if user is None:
        return None, None
    import pwd

    try:
        entry = pwd.getpwuid(user) if isinstance(user, int) else pwd.getpwnam(user)
    except KeyError:
        if isinstance(user, int):
            return user, user
        raise ValueError(
            f"no account named {user!r} for the sandbox; pass SandboxConfig(user=<uid>)"
        ) from None
    return entry.pw_uid, entry.pw_gid


def _child_config(
    config: SandboxConfig, uid: int | None, gid: int | None, scratch: Path, report_fd: int
) -> dict:
    return {
        "uid": uid,
        "gid": gid,
        "scratch_dir": str(scratch),
        "report_fd": report_fd,
        "cpu_s": config.cpu_s or math.ceil(config.timeout_s) + 1,
        "memory_mb": config.memory_mb,
        "max_processes": config.max_processes,
        "max_file_mb": config.max_file_mb,
        "max_open_files": config.max_open_files,
        "scratch_mb": config.scratch_mb,
        "isolate_network": config.isolate_network,
        "readonly_root": config.readonly_root,
        "private_tmp": config.private_tmp,
        "require": list(config.require),
    }


def _minimal_env() -> dict[str, str]:
    # Built from nothing: tokens, keys and proxies of the parent never reach the program.
    return {"PATH": SAFE_PATH, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": "/tmp", "TMPDIR": "/tmp"}


def _wait_for_exit(pid: int, timeout_s: float) -> bool:
    """Wait until ``pid`` exits without reaping it (its pid, and so its process group id, stays
    reserved until we have killed the group). Returns False on timeout."""
    if hasattr(os, "pidfd_open"):
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            pidfd = None
        if pidfd is not None:
            try:
                readable, _, _ = select.select([pidfd], [], [], timeout_s)
                return bool(readable)
            finally:
                os.close(pidfd)
    deadline = time.monotonic() + timeout_s
    delay = 0.002
    while True:
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(handle, max_chars: int) -> str:
    handle.seek(0, os.SEEK_END)
    size = handle.tell()
    handle.seek(max(0, size - _TAIL_BYTES))
    return handle.read().decode("utf-8", errors="replace")[-max_chars:]


def _read_report(handle) -> dict | None:
    handle.seek(0)
    raw = handle.read()
    try:
        return json.loads(raw) if raw else None
    except json.JSONDecodeError:
        return None


def _classify(
    returncode: int,
    timed_out: bool,
    nonce: str,
    stdout: str,
    stderr: str,
    report: dict | None,
    duration: float,
    config: SandboxConfig,
) -> SandboxResult:
    if report is None:
        # The child never got to run the program (setup failed or the interpreter did not start).
        status = "timeout" if timed_out else "error"
        return SandboxResult(
            status, returncode, duration, stdout, stderr[-config.tail_chars :], ("own-session",)
        )
    isolation = ("own-session", *report["isolation"])
    _warn_once_if_weak(isolation, config, report["notes"])
    passed = nonce in stdout and returncode == 0
    if passed:
        status = "passed"
    elif timed_out or returncode == -signal.SIGXCPU:
        status = "timeout"
    else:
        status = "failed"
    stdout = stdout.replace("\n" + nonce + "\n", "")[-config.tail_chars :]
    return SandboxResult(status, returncode, duration, stdout, stderr, isolation, tuple(report["notes"]))


def _warn_once_if_weak(isolation: tuple[str, ...], config: SandboxConfig, notes: list[str]) -> None:
    wanted = ["pid-namespace", "rlimits"]
    if config.isolate_network:
        wanted.append("network-namespace")
    if config.readonly_root:
        wanted.append("readonly-root")
    if config.user is not None and os.geteuid() == 0:
        wanted.append("unprivileged-user")
    missing = [layer for layer in wanted if layer not in isolation and layer not in _warned_layers]
    if missing:
        _warned_layers.update(missing)
        logger.warning(
            "sandbox running without %s on this machine (%s)", ", ".join(missing), "; ".join(notes)
        )
