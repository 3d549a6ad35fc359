"""Child side of :mod:`flexretrofit.evaluation.sandbox`: isolate this process, then run one program.

Run as a script, never imported by the package: ``python -I -S _sandbox_child.py CONFIG_JSON``.
Standard library only (importing ``flexretrofit`` would pull in torch and transformers).

Protocol with the parent:
- ``argv[1]``: JSON config written by ``sandbox._child_config``.
- fd 0: a file holding ``<nonce>\\n<program source>``; fd 1 / fd 2: files for stdout / stderr.
- ``config["report_fd"]``: the isolation that was achieved, one JSON object, written before the
  program starts; the fd is closed so the program never sees it.
- On success the harness prints the nonce after the program returns and exits 0. Anything else
  (an exception, ``sys.exit``, ``os._exit`` before the end, a signal) leaves no nonce behind.

Isolation, strongest first, each step recorded by name in the report and skipped (not fatal)
when the OS refuses it:
- new user (when not root), mount, PID, network, IPC and UTS namespaces (``unshare``);
- mount namespace: the whole tree read-only and nosuid, private size-capped tmpfs on /tmp and
  /dev/shm, a fresh /proc that shows only the sandbox's processes;
- an unprivileged account (``nobody``) when started as root, all capabilities gone, no_new_privs;
- with a PID namespace: a small init (PID 1, killed with its parent via ``PR_SET_PDEATHSIG``) reaps,
  and the program runs as PID 2, so signals such as SIGXCPU from the CPU limit work normally;
- resource limits (address space, CPU seconds, processes, file size, open files, no core dumps).
"""

import ctypes
import json
import os
import resource
import signal
import stat
import sys

SETUP_FAILED = 120  # exit code when isolation could not be set up (the program never ran)

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC = 2, 4, 8
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
SYS_MOUNT_SETATTR = 442  # same number on x86_64 and the asm-generic table (aarch64, riscv)
AT_FDCWD, AT_RECURSIVE = -100, 0x8000
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID = 0x1, 0x2

NAMESPACE_NAMES = {
    CLONE_NEWUSER: "user-namespace",
    CLONE_NEWNS: "mount-namespace",
    CLONE_NEWPID: "pid-namespace",
    CLONE_NEWNET: "network-namespace",
    CLONE_NEWIPC: "ipc-namespace",
    CLONE_NEWUTS: "uts-namespace",
}


class SetupError(RuntimeError):
    pass


def _libc():
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


LIBC = _libc()


def _call(name, *args):
    """Call a libc function; raise OSError on -1, AttributeError when the platform lacks it."""
    function = getattr(LIBC, name)
    if function(*args) == -1:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{name}: {os.strerror(errno)}")


def _encode(value):
    return None if value is None else os.fsencode(value)


def _mount(source, target, fstype, flags, data=None):
    _call("mount", _encode(source), _encode(target), _encode(fstype), ctypes.c_ulong(flags), _encode(data))


def _write_file(path, text):
    with open(path, "w") as handle:
        handle.write(text)


# --------------------------------------------------------------------------------------------
# namespaces
# --------------------------------------------------------------------------------------------
def _unshare(config, report):
    """Enter new namespaces, trying the strongest set first. Returns the flags that took effect."""
    full = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS
    if config["isolate_network"]:
        full |= CLONE_NEWNET
    as_root = os.geteuid() == 0
    # Root can create namespaces directly (and keep the ability to switch to `nobody`); anyone
    # else needs a user namespace first, which is what `unshare -rn` does.
    attempts = [full, full | CLONE_NEWUSER] if as_root else [full | CLONE_NEWUSER]
    if config["isolate_network"]:
        attempts += [CLONE_NEWNET] if as_root else [CLONE_NEWUSER | CLONE_NEWNET]
    uid, gid = os.geteuid(), os.getegid()
    for flags in attempts:
        try:
            _call("unshare", ctypes.c_int(flags))
        except (OSError, AttributeError, TypeError) as error:
            report["notes"].append(f"unshare({_flag_names(flags)}) refused: {error}")
            continue
        if flags & CLONE_NEWUSER:
            # Map our own ids to root inside: enough to mount, never more than we already had.
            _write_file("/proc/self/setgroups", "deny")
            _write_file("/proc/self/uid_map", f"0 {uid} 1")
            _write_file("/proc/self/gid_map", f"0 {gid} 1")
        report["isolation"].extend(NAMESPACE_NAMES[bit] for bit in NAMESPACE_NAMES if flags & bit)
        return flags
    return 0


def _flag_names(flags):
    return "|".join(name for bit, name in NAMESPACE_NAMES.items() if flags & bit)


def _enter_pid_namespace(report):
    """After unshare(CLONE_NEWPID) only children enter the new namespace: fork. The child is its
    PID 1 and returns; this process waits and ends the way the program ended (exit code or
    signal, passed up through a pipe). When PID 1 exits the kernel kills everything left in the
    namespace, including processes that escaped the process group with setsid()."""
    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read_fd)
        report["status_fd"] = write_fd
        try:  # PID 1 stays root, so this survives; the namespace dies with the waiting parent
            _call("prctl", ctypes.c_int(PR_SET_PDEATHSIG), ctypes.c_ulong(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass
        return
    try:
        os.close(write_fd)
        _close_program_fds(report)
        status = _wait(child)
        message = os.read(read_fd, 64).split()
        if len(message) == 2 and message[0] == b"signal":
            _die_by_signal(int(message[1]))
        elif len(message) == 2 and message[0] == b"exit":
            os._exit(int(message[1]))
        _end_like(status)
    finally:
        os._exit(SETUP_FAILED)  # never fall through into running the program out here


def _run_under_init(report):
    """In PID 1: fork the process that will run the program and reap until it ends.

    PID 1 of a namespace ignores signals it has no handler for (SIGTERM, SIGXCPU from the CPU
    limit, ...), so the program must not be PID 1 itself."""
    status_fd = report.pop("status_fd")
    child = os.fork()
    if child == 0:
        os.close(status_fd)
        return
    try:
        _close_program_fds(report)
        status = _wait(child)
        if os.WIFSIGNALED(status):
            os.write(status_fd, b"signal %d" % os.WTERMSIG(status))
        else:
            os.write(status_fd, b"exit %d" % os.waitstatus_to_exitcode(status))
        os._exit(0)
    finally:
        os._exit(SETUP_FAILED)


def _close_program_fds(report):
    # The waiting processes keep no handle on the program's input or the report.
    os.close(0)
    os.close(report["report_fd"])


def _wait(pid):
    while True:
        try:
            return os.waitpid(pid, 0)[1]
        except InterruptedError:
            continue


def _end_like(status):
    if os.WIFSIGNALED(status):
        _die_by_signal(os.WTERMSIG(status))
    os._exit(os.waitstatus_to_exitcode(status))


def _die_by_signal(signum):
    try:
        signal.signal(signum, signal.SIG_DFL)  # impossible (and unneeded) for SIGKILL
    except (OSError, ValueError):
        pass
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.kill(os.getpid(), signum)
    os._exit(128 + signum)  # a signal whose default action is not to terminate


# --------------------------------------------------------------------------------------------
# mounts
# --------------------------------------------------------------------------------------------
def _interpreter_paths():
    """Directories the program needs to import the standard library and re-run the interpreter."""
    paths = {os.path.abspath(entry) for entry in sys.path if entry and os.path.isdir(entry)}
    paths.add(os.path.dirname(os.path.realpath(sys.executable)))
    # A bind of a directory brings its subdirectories along; drop the nested ones.
    return sorted(path for path in paths if not any(path.startswith(other + os.sep) for other in paths))


def _private_ancestor(path):
    """The topmost ancestor of ``path`` that other users cannot traverse (e.g. /root), or None."""
    current = os.sep
    for part in path.strip(os.sep).split(os.sep)[:-1]:
        current = os.path.join(current, part)
        if not os.stat(current).st_mode & stat.S_IXOTH:
            return current
    return None


def _expose_interpreter(paths, report):
    """Make the interpreter readable by the unprivileged account when it lives under a private
    directory (a pyenv under /root): put an empty tmpfs over that directory, in this mount
    namespace only, and bind just the interpreter's directories back. The rest stays hidden."""
    by_ancestor = {}
    for path in paths:
        ancestor = _private_ancestor(path)
        if ancestor is not None:
            by_ancestor.setdefault(ancestor, []).append(path)
    for ancestor, inner in by_ancestor.items():
        handles = {path: os.open(path, os.O_PATH | os.O_DIRECTORY) for path in inner}
        _mount("tmpfs", ancestor, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
        for path, handle in handles.items():
            os.makedirs(path, mode=0o755, exist_ok=True)
            _mount(f"/proc/self/fd/{handle}", path, None, MS_BIND | MS_REC)
            os.close(handle)
        report["notes"].append(f"hid {ancestor}, exposing only {', '.join(inner)}")


def _mount_setattr_readonly_root():
    attr = (ctypes.c_uint64 * 4)(MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID, 0, 0, 0)
    syscall = LIBC.syscall
    syscall.restype = ctypes.c_long
    result = syscall(
        ctypes.c_long(SYS_MOUNT_SETATTR),
        ctypes.c_int(AT_FDCWD),
        ctypes.c_char_p(b"/"),
        ctypes.c_uint(AT_RECURSIVE),
        ctypes.byref(attr),
        ctypes.c_size_t(ctypes.sizeof(attr)),
    )
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount_setattr: {os.strerror(errno)}")


def _set_up_mounts(config, flags, report):
    """Mount what the namespace allows; the caller is already in the parent's scratch directory,
    which stays usable as the working directory even if a mount below hides its path."""
    if not flags & CLONE_NEWNS:
        return
    try:
        # Without this, mounts made below could propagate back to the host.
        _mount(None, "/", None, MS_REC | MS_PRIVATE)
    except OSError as error:
        report["notes"].append(f"mounts skipped, could not make / private: {error}")
        return
    if _switches_user(config, flags):
        _expose_interpreter(_interpreter_paths(), report)
    if config["readonly_root"]:
        try:
            _mount_setattr_readonly_root()
            report["isolation"].append("readonly-root")
        except (OSError, AttributeError) as error:
            report["notes"].append(f"root left writable: {error}")
    if config["private_tmp"]:
        options = f"size={config['scratch_mb']}m,mode=1777"
        try:
            for target in ("/dev/shm", "/tmp"):
                if os.path.isdir(target):
                    _mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, options)
            os.mkdir("/tmp/work", 0o700)
            if _switches_user(config, flags):
                os.chown("/tmp/work", config["uid"], config["gid"])
            os.chdir("/tmp/work")
            report["isolation"].append("private-tmp")
        except OSError as error:
            report["notes"].append(f"no private /tmp: {error}")
    if flags & CLONE_NEWPID:
        try:
            _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
            report["isolation"].append("private-proc")
        except OSError as error:
            report["notes"].append(f"host /proc still visible: {error}")


# --------------------------------------------------------------------------------------------
# limits and privileges
# --------------------------------------------------------------------------------------------
def _set_limits(config, report):
    mib = 1024 * 1024
    limits = [
        (resource.RLIMIT_CPU, config["cpu_s"]),
        (resource.RLIMIT_FSIZE, config["max_file_mb"] * mib),
        (resource.RLIMIT_NOFILE, config["max_open_files"]),
        (resource.RLIMIT_CORE, 0),
    ]
    if hasattr(resource, "RLIMIT_NPROC"):
        limits.append((resource.RLIMIT_NPROC, config["max_processes"]))
    if hasattr(resource, "RLIMIT_AS"):
        limits.append((resource.RLIMIT_AS, config["memory_mb"] * mib))
    for kind, value in limits:
        # CPU: the soft limit sends SIGXCPU, one second later the hard limit sends SIGKILL.
        hard = value + 1 if kind == resource.RLIMIT_CPU else value
        _, inherited_hard = resource.getrlimit(kind)
        if inherited_hard != resource.RLIM_INFINITY:  # only root may raise a hard limit
            hard = min(hard, inherited_hard)
        resource.setrlimit(kind, (min(value, hard), hard))
    report["isolation"].append("rlimits")


def _switches_user(config, flags):
    """Root (outside a user namespace) runs the program as ``config["uid"]``."""
    return config["uid"] is not None and os.geteuid() == 0 and not flags & CLONE_NEWUSER


def _drop_privileges(config, flags, report):
    uid, gid = config["uid"], config["gid"]
    if _switches_user(config, flags):
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
        try:
            os.setuid(0)
        except PermissionError:
            report["isolation"].append("unprivileged-user")
        else:
            raise SetupError("could switch back to root after dropping privileges")
    elif flags & CLONE_NEWUSER:
        # Root inside our own user namespace could undo the read-only mounts: drop every
        # capability (struct __user_cap_header_struct v3 + two zeroed data structs).
        header = (ctypes.c_uint32 * 2)(0x20080522, 0)
        data = (ctypes.c_uint32 * 6)()
        try:
            _call("capset", ctypes.byref(header), ctypes.byref(data))
            report["isolation"].append("no-capabilities")
        except (OSError, AttributeError) as error:
            report["notes"].append(f"capabilities kept: {error}")
    try:
        _call("prctl", ctypes.c_int(PR_SET_NO_NEW_PRIVS), ctypes.c_ulong(1), 0, 0, 0)
        report["isolation"].append("no-new-privs")
    except (OSError, AttributeError) as error:
        report["notes"].append(f"prctl unavailable: {error}")


def set_up(config):
    """Isolate the current process. Returns the report; may fork (the parent never returns)."""
    report = {"isolation": [], "notes": [], "report_fd": config["report_fd"]}
    flags = _unshare(config, report)
    if flags & CLONE_NEWPID:
        _enter_pid_namespace(report)
    os.chdir(config["scratch_dir"])
    _set_up_mounts(config, flags, report)  # in PID 1: a fresh /proc needs the new namespace
    if flags & CLONE_NEWPID:
        _run_under_init(report)
    os.environ["HOME"] = os.environ["TMPDIR"] = os.getcwd()
    _set_limits(config, report)
    _drop_privileges(config, flags, report)
    stdlib = os.path.dirname(os.__file__)
    if not os.access(stdlib, os.R_OK | os.X_OK):
        raise SetupError(
            f"the sandbox account cannot read the Python standard library at {stdlib}; pass "
            "SandboxConfig(python=...) pointing at an interpreter installed in a world-readable place"
        )
    missing = [layer for layer in config["require"] if layer not in report["isolation"]]
    if missing:
        raise SetupError(f"required isolation unavailable: {missing}; notes: {report['notes']}")
    return report


# --------------------------------------------------------------------------------------------
# harness
# --------------------------------------------------------------------------------------------
def _read_stdin():
    chunks = []
    while True:
        chunk = os.read(0, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    # Replace fd 0 so the program cannot seek back and read the nonce.
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    nonce, _, source = b"".join(chunks).partition(b"\n")
    return nonce.decode(), source.decode("utf-8")


def run_program(nonce, source):
    import builtins
    import linecache
    import traceback

    filename = "program.py"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    try:
        exec(compile(source, filename, "exec"), namespace)
    except BaseException:  # SystemExit and KeyboardInterrupt too: the program did not finish
        traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
    sys.stdout.flush()
    sys.stdout.write("\n" + nonce + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skip atexit handlers and thread joins the program may have left behind


def main():
    config = json.loads(sys.argv[1])
    try:
        report = set_up(config)
    except Exception as error:  # any setup failure: the program must not run half-isolated
        sys.stderr.write(f"sandbox setup failed: {type(error).__name__}: {error}\n")
        sys.stderr.flush()
        os._exit(SETUP_FAILED)
    nonce, source = _read_stdin()
    report_fd = report.pop("report_fd")
    os.write(report_fd, json.dumps(report).encode())
    os.close(report_fd)
    sys.argv = [sys.argv[0]]
    del config, report
    run_program(nonce, source)


if __name__ == "__main__":
    main()
