"""The parent side of the sandbox: start a judge process per program, enforce the wall clock, read the
verdict (see the package docstring for what the judge and the candidate do)."""

from __future__ import annotations

import contextlib
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
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

JUDGE_SCRIPT = Path(__file__).with_name("judge.py")
# The judge is loaded by file path rather than run as a script: a script is compiled on every start (~10 ms
# of the ~90 ms a run costs), a loaded module's bytecode is cached. With -I nothing else is importable.
_JUDGE_BOOT = (
    "import importlib.util as u\n"
    f"spec = u.spec_from_file_location('sandbox_judge', {str(JUDGE_SCRIPT)!r})\n"
    "judge = u.module_from_spec(spec)\n"
    "spec.loader.exec_module(judge)\n"
    "judge.main()\n"
)
STATUSES = ("passed", "failed", "timeout", "error")
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
MAX_TIMEOUT_S = 3600.0  # one program, one hour: beyond that a limit is a mistake (and overflows timers)
PER_SANDBOX = "per-sandbox"
_TAIL_BYTES = 64 * 1024
_warned_layers: set[str] = set()


@dataclass(frozen=True)
class SandboxConfig:
    """Limits and isolation for one run.

    Args:
        timeout_s: wall-clock limit, at most :data:`MAX_TIMEOUT_S`; the run is killed and reported
            as ``"timeout"`` after it.
        memory_mb: address-space limit of the candidate (``RLIMIT_AS``).
        cpu_s: CPU-seconds limit (``RLIMIT_CPU``) of each candidate process; default ``ceil(timeout_s) + 1``.
        max_processes: ``RLIMIT_NPROC``, counted by the kernel per uid: with the default ``user`` each
            sandbox has a uid of its own, so this is per sandbox.
        max_file_mb: ``RLIMIT_FSIZE``; also caps what the program can print.
        max_open_files: ``RLIMIT_NOFILE``.
        scratch_mb: size of the private ``/tmp`` (and ``/dev/shm``) tmpfs.
        max_message_mb: largest single answer (or argument list) that may cross the boundary; it
            may hold one value per 32 bytes of this (a list of many tiny values would otherwise make
            the judge's memory a large multiple of it).
        user: account the candidate runs as when started as root: ``"per-sandbox"`` (a fresh uid no
            other running sandbox has), an account name or a uid (shared by all sandboxes), or ``None``
            to keep root (for debugging only).
        isolate_network: put the candidate in an empty network namespace.
        readonly_root: mount the candidate's root read-only.
        python: interpreter for the judge and the candidate; default ``sys.executable`` (run with
            ``-I -S``, so only the standard library is importable).
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
    max_message_mb: int = 64
    user: str | int | None = PER_SANDBOX
    isolate_network: bool = True
    readonly_root: bool = True
    python: str | None = None
    require: tuple[str, ...] = ()
    tail_chars: int = 2000

    def __post_init__(self) -> None:
        timeout = self.timeout_s
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not 0 < timeout <= MAX_TIMEOUT_S
        ):
            raise ValueError(
                f"timeout_s must be a number of seconds > 0 and <= {MAX_TIMEOUT_S:g}, got {timeout!r}"
            )
        if self.cpu_s is not None and (
            isinstance(self.cpu_s, bool)
            or not isinstance(self.cpu_s, int)
            or not 1 <= self.cpu_s <= MAX_TIMEOUT_S
        ):
            raise ValueError(
                f"cpu_s must be None or whole seconds from 1 to {MAX_TIMEOUT_S:g}, got {self.cpu_s!r}"
            )
        for name in (
            "memory_mb",
            "max_processes",
            "max_file_mb",
            "max_open_files",
            "scratch_mb",
            "max_message_mb",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class TestProgram:
    """One untrusted program and the trusted code that judges it.

    Args:
        program: untrusted source (e.g. prompt + model completion + suffix); runs in the candidate.
        entry_point: name of the program's function the tests call; ``""`` with no ``test`` just runs
            the program (see :func:`run_program`).
        test: trusted source defining ``check(candidate)``; runs in the judge, with ``candidate`` a
            proxy for the program's ``entry_point``.
        context: trusted source run in the judge before ``test`` (e.g. the reference program, whose
            helpers such as ``encode_cyclic`` a test may call).
    """

    __test__ = False  # not a pytest test class

    program: str
    entry_point: str = ""
    test: str = ""
    context: str = ""


@dataclass(frozen=True)
class SandboxResult:
    """Outcome of one run.

    ``status``: ``"passed"`` (the trusted tests passed), ``"failed"`` (a test failed, the program raised,
    exited early, crashed, was killed by a signal or hit a memory/file/process limit, or answered with
    something that cannot cross), ``"timeout"`` (wall-clock or CPU limit)
    or ``"error"`` (the sandbox itself, or the tests, could not run). ``reason`` says why, from the
    judge. ``isolation`` lists the layers that were in place, e.g. ``("own-session", "mount-namespace",
    "pid-namespace", ..., "minimal-root", "rlimits", "unprivileged-user", "own-uid", "seccomp")``.
    """

    status: str
    returncode: int | None
    duration_s: float
    stdout_tail: str
    stderr_tail: str
    isolation: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    reason: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def run_tests(test_program: TestProgram, config: SandboxConfig | None = None) -> SandboxResult:
    """Judge ``test_program``: its trusted ``test`` calls the untrusted program's ``entry_point``."""
    if os.name != "posix":
        raise OSError("the sandbox needs a POSIX system (Linux for full isolation); run evaluation on Linux.")
    config = config or SandboxConfig()
    with _UIDS.lease(config.user) as (uid, gid, own_uid):
        return _run(test_program, config, uid, gid, own_uid)


def run_program(source: str, config: SandboxConfig | None = None) -> SandboxResult:
    """Run ``source`` in the sandbox and report how it ended: ``"passed"`` if it ran to its end.

    That outcome is the program's own word (its process reports it), so it is no verdict: use it to
    run code, and :func:`run_tests` to judge it.
    """
    return run_tests(TestProgram(source), config)


def run_many(
    test_programs: Sequence[TestProgram | str],
    config: SandboxConfig | None = None,
    max_workers: int = 2,
    on_result: Callable[[int, SandboxResult], None] | None = None,
) -> list[SandboxResult]:
    """Run many with ``max_workers`` in parallel (a plain string runs as :func:`run_program`); results
    come back in input order.

    Threads only wait on child processes, so the pool costs no CPU of its own. ``on_result(index,
    result)`` is called as each one finishes (from a worker thread), e.g. for progress or for writing
    rows as they complete.
    """
    if max_workers < 1:
        raise ValueError(f"max_workers must be >= 1, got {max_workers}")
    results: list[SandboxResult | None] = [None] * len(test_programs)

    def run_one(index: int) -> None:
        item = test_programs[index]
        result = run_tests(TestProgram(item) if isinstance(item, str) else item, config)
        results[index] = result
        if on_result is not None:
            on_result(index, result)

    with ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="sandbox") as pool:
        for future in [pool.submit(run_one, index) for index in range(len(test_programs))]:
            future.result()
    return results  # type: ignore[return-value]


def probe_isolation(config: SandboxConfig | None = None) -> tuple[str, ...]:
    """The isolation layers this machine gives a sandboxed program (runs one trivial program)."""
    return run_program("pass\n", config).isolation


# ------------------------------------------------------------------------------------------------
# one run
# ------------------------------------------------------------------------------------------------
def _run(test_program: TestProgram, config: SandboxConfig, uid: int | None, gid: int | None, own_uid: bool):
    workdir = Path(tempfile.mkdtemp(prefix="flexretrofit-sandbox-"))  # mode 0700, ours only
    try:
        scratch = workdir / "scratch"
        scratch.mkdir()
        if uid is not None and os.geteuid() == 0:
            os.chown(scratch, uid, gid)
        task = {
            "program": test_program.program,
            "entry_point": test_program.entry_point,
            "test": test_program.test,
            "context": test_program.context,
        }
        # ASCII JSON: lone surrogates and NUL bytes travel as escapes and fail in compile(), not here.
        (workdir / "task").write_bytes(json.dumps(task, ensure_ascii=True).encode("ascii"))
        with (
            open(workdir / "task", "rb") as stdin,
            open(workdir / "stdout", "w+b") as stdout,
            open(workdir / "stderr", "w+b") as stderr,
            open(workdir / "report", "w+b") as report,
        ):
            child_config = _child_config(config, uid, gid, own_uid, scratch, report.fileno())
            command = [
                config.python or sys.executable,
                "-I",
                "-S",
                "-c",
                _JUDGE_BOOT,
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
            stdout_text = _tail(stdout, config.tail_chars)
            stderr_text = _tail(stderr, config.tail_chars)
            outcome = _read_report(report)
        return _classify(outcome, not finished, process.returncode, stdout_text, stderr_text, duration)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _classify(
    outcome: dict | None, timed_out: bool, returncode: int, stdout: str, stderr: str, duration: float
) -> SandboxResult:
    if outcome is None:  # the judge was killed (wall clock) or never started
        status = "timeout" if timed_out else "error"
        reason = "wall-clock limit" if timed_out else "the judge did not report"
        return SandboxResult(status, returncode, duration, stdout, stderr, ("own-session",), reason=reason)
    isolation = ("own-session", *outcome.get("isolation", ()))
    notes = tuple(outcome.get("notes", ()))
    if "isolation" in outcome:
        _warn_once_if_weak(isolation, notes)
    verdict = outcome["verdict"] if outcome.get("verdict") in STATUSES else "error"
    if verdict == "error" and "see stderr" in str(outcome.get("reason", "")):
        # Set-up failures are written to stderr by trusted code before any program ran: name the cause.
        cause = stderr.strip().splitlines()[-1] if stderr.strip() else "no message"
        outcome = {**outcome, "reason": f"{outcome['reason'].replace(' (see stderr)', '')}: {cause}"}
    return SandboxResult(
        verdict,
        outcome.get("returncode", 0 if verdict == "passed" else None),
        duration,
        stdout,
        stderr,
        isolation,
        notes,
        str(outcome.get("reason", "")),
    )


# ------------------------------------------------------------------------------------------------
# accounts
# ------------------------------------------------------------------------------------------------
class _UidPool:
    """Hands each running sandbox a uid no other running sandbox of this process has.

    The uids come from a block high in the mapped range that no account uses; across processes a
    random start makes a clash unlikely, and a clash would only make two sandboxes share limits.
    """

    SPAN = 1 << 20

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_use: set[int] = set()
        self._base: int | None = None

    @contextlib.contextmanager
    def lease(self, user: str | int | None):
        if user != PER_SANDBOX or os.geteuid() != 0:
            uid, gid = _resolve_user(user if user != PER_SANDBOX else "nobody")
            yield uid, gid, False
            return
        with self._lock:
            base = self._base if self._base is not None else self._choose_base()
            self._base = base
            uid = base + secrets.randbelow(self.SPAN)
            while uid in self._in_use:
                uid = base + secrets.randbelow(self.SPAN)
            self._in_use.add(uid)
        try:
            yield uid, uid, True
        finally:
            with self._lock:
                self._in_use.discard(uid)

    def _choose_base(self) -> int:
        import pwd

        taken = max((entry.pw_uid for entry in pwd.getpwall() if entry.pw_uid < 1 << 31), default=0)
        for inside, _, count in _uid_map():
            top = min(inside + count, (1 << 31) - 1)  # stay clear of (uid_t) -1 and signedness trouble
            if top - max(inside, taken + 1) >= 2 * self.SPAN:
                return top - 2 * self.SPAN
        raise ValueError("no free block of uids for the sandboxes; pass SandboxConfig(user='nobody')")


def _uid_map() -> list[tuple[int, int, int]]:
    try:
        with open("/proc/self/uid_map") as handle:
            return [tuple(int(field) for field in line.split()) for line in handle if line.strip()]
    except OSError:
        return [(0, 0, 1 << 32)]


_UIDS = _UidPool()


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
    config: SandboxConfig, uid: int | None, gid: int | None, own_uid: bool, scratch: Path, report_fd: int
) -> dict:
    return {
        "uid": uid,
        "gid": gid,
        "own_uid": own_uid,
        "scratch_dir": str(scratch),
        "report_fd": report_fd,
        "cpu_s": config.cpu_s or math.ceil(config.timeout_s) + 1,
        "memory_mb": config.memory_mb,
        "max_processes": config.max_processes,
        "max_file_mb": config.max_file_mb,
        "max_open_files": config.max_open_files,
        "scratch_mb": config.scratch_mb,
        "max_message_bytes": config.max_message_mb * 1024 * 1024,
        "isolate_network": config.isolate_network,
        "readonly_root": config.readonly_root,
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


def _warn_once_if_weak(isolation: tuple[str, ...], notes: tuple[str, ...]) -> None:
    wanted = ["pid-namespace", "network-namespace", "minimal-root", "rlimits", "seccomp"]
    if os.geteuid() == 0:
        wanted.append("unprivileged-user")
    missing = [layer for layer in wanted if layer not in isolation and layer not in _warned_layers]
    if missing:
        _warned_layers.update(missing)
        logger.warning(
            "sandbox running without %s on this machine (%s)", ", ".join(missing), "; ".join(notes)
        )
