"""Isolation of the candidate process of :mod:`flexretrofit.evaluation.sandbox` (standard library only).

Loaded by file path from ``judge.py`` (the interpreter runs ``-I -S``, so nothing else is
importable); never imported by the package. :func:`isolate` turns a freshly forked child of the judge
into the candidate process; every step is recorded by name in ``report["isolation"]`` and skipped,
with a note, when the OS refuses it:

- new user (when not root), mount, PID, network, IPC and UTS namespaces (``unshare``);
- a minimal root file system (``pivot_root`` into a tmpfs): the standard library of this interpreter
  and the system shared libraries, read-only, with every ``site-packages`` / ``dist-packages`` folder
  hidden; ``/dev/{null,zero,full,random,urandom}``; private size-capped ``/tmp`` and ``/dev/shm``; a
  fresh ``/proc`` of the sandbox's own PID namespace. The project tree, installed packages, datasets
  and results are not in it. Without a mount namespace the whole tree is visible (note
  ``minimal-root`` missing);
- with a PID namespace: a small init (PID 1, killed with its parent via ``PR_SET_PDEATHSIG``) reaps,
  and the program runs as PID 2, so signals such as SIGXCPU from the CPU limit work normally;
- resource limits (address space, CPU seconds, processes, file size, open files, no core dumps);
- when started as root: an account of its own (a uid no other sandbox uses, chosen by the parent), so
  ``RLIMIT_NPROC`` (counted per uid) holds per sandbox; all capabilities gone; ``no_new_privs``;
- a seccomp filter (x86_64): no new namespaces (nested user namespaces included), no mounts, no
  ``ptrace`` / ``process_vm_*``, no kernel keyrings, BPF, perf, io_uring or module loading, and no
  ``setsid`` / ``setpgid``: the program's processes stay in its session, whose scheduler autogroup
  shares the CPU fairly with concurrent sandboxes.
"""

import ctypes
import glob
import json
import os
import platform
import resource
import signal
import sys

SETUP_FAILED = 120  # exit code when isolation could not be set up (the program never ran)

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP = 1, 4, 38, 22
SECCOMP_MODE_FILTER = 2
AT_FDCWD, AT_RECURSIVE = -100, 0x8000
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID = 0x1, 0x2
DEVICES = ("null", "zero", "full", "random", "urandom")
SHARED_LIBRARY_DIRS = ("/usr/lib", "/usr/lib64", "/lib", "/lib64")

NAMESPACE_NAMES = {
    CLONE_NEWUSER: "user-namespace",
    CLONE_NEWNS: "mount-namespace",
    CLONE_NEWPID: "pid-namespace",
    CLONE_NEWNET: "network-namespace",
    CLONE_NEWIPC: "ipc-namespace",
    CLONE_NEWUTS: "uts-namespace",
}

# x86_64 system call numbers (arch/x86/entry/syscalls/syscall_64.tbl).
X86_64 = {
    "arch": 0xC000003E,  # AUDIT_ARCH_X86_64
    "clone": 56,
    "clone3": 435,
    "denied": {
        "ptrace": 101,
        "syslog": 103,
        "setpgid": 109,
        "setsid": 112,
        "pivot_root": 155,
        "chroot": 161,
        "acct": 163,
        "mount": 165,
        "umount2": 166,
        "swapon": 167,
        "swapoff": 168,
        "reboot": 169,
        "init_module": 175,
        "delete_module": 176,
        "quotactl": 179,
        "kexec_load": 246,
        "add_key": 248,
        "request_key": 249,
        "keyctl": 250,
        "unshare": 272,
        "perf_event_open": 298,
        "name_to_handle_at": 303,
        "open_by_handle_at": 304,
        "setns": 308,
        "process_vm_readv": 310,
        "process_vm_writev": 311,
        "finit_module": 313,
        "kexec_file_load": 320,
        "bpf": 321,
        "userfaultfd": 323,
        "io_uring_setup": 425,
        "io_uring_enter": 426,
        "io_uring_register": 427,
        "open_tree": 428,
        "move_mount": 429,
        "fsopen": 430,
        "fsconfig": 431,
        "fsmount": 432,
        "fspick": 433,
        "mount_setattr": 442,
    },  # fmt: skip
}
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
SYS_MOUNT_SETATTR = 442  # same number on x86_64 and the asm-generic table (aarch64, riscv)


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


def _syscall(number, *args):
    syscall = LIBC.syscall
    syscall.restype = ctypes.c_long
    if syscall(ctypes.c_long(number), *args) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def _encode(value):
    return None if value is None else os.fsencode(value)


def _mount(source, target, fstype, flags, data=None):
    _call("mount", _encode(source), _encode(target), _encode(fstype), ctypes.c_ulong(flags), _encode(data))


def _write_file(path, text):
    with open(path, "w") as handle:
        handle.write(text)


# --------------------------------------------------------------------------------------------
# namespaces and processes
# --------------------------------------------------------------------------------------------
def _unshare(config, report):
    """Enter new namespaces, trying the strongest set first. Returns the flags that took effect."""
    full = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS
    if config["isolate_network"]:
        full |= CLONE_NEWNET
    as_root = os.geteuid() == 0
    # Root can create namespaces directly (and keep the ability to switch accounts); anyone
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


def _wait_and_end_like(child, program_fds, status_fd=None):
    """Wait for ``child`` and end this process the same way (exit code or signal). Never returns.

    PID 1 of a namespace cannot end by a signal it sends itself, so the namespace init also writes
    the program's wait status to ``status_fd`` for the judge."""
    try:
        for fd in program_fds:
            os.close(fd)  # the waiting processes keep no handle on the program's channels
        status = _wait(child)
        if status_fd is not None:
            os.write(status_fd, b"%d" % status)
        _end_like(status)
    finally:
        os._exit(SETUP_FAILED)  # never fall through into running the program out here


def _fork_into_pid_namespace(program_fds):
    """After unshare(CLONE_NEWPID) only children enter the new namespace: fork twice. The first child
    is PID 1 (an init that reaps, killed with its parent); the program runs as PID 2, because PID 1
    ignores signals it has no handler for (SIGXCPU from the CPU limit, ...). When PID 1 exits the
    kernel kills everything left in the namespace, even processes that escaped the process group."""
    child = os.fork()
    if child:
        _wait_and_end_like(child, program_fds)
    try:  # PID 1 stays root, so this survives; the namespace dies with the waiting parent
        _call("prctl", ctypes.c_int(PR_SET_PDEATHSIG), ctypes.c_ulong(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _wait(pid):
    while True:
        try:
            return os.waitpid(pid, 0)[1]
        except InterruptedError:
            continue


def _end_like(status):
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        try:
            signal.signal(signum, signal.SIG_DFL)  # impossible (and unneeded) for SIGKILL
        except (OSError, ValueError):
            pass
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        os.kill(os.getpid(), signum)
        os._exit(128 + signum)  # a signal whose default action is not to terminate
    os._exit(os.waitstatus_to_exitcode(status))


# --------------------------------------------------------------------------------------------
# the minimal root
# --------------------------------------------------------------------------------------------
def _stdlib_dirs():
    """Directories of this interpreter's standard library (``-I -S``: no site-packages on the path)."""
    paths = {os.path.realpath(entry) for entry in sys.path if entry and os.path.isdir(entry)}
    return sorted(path for path in paths if not any(path.startswith(other + os.sep) for other in paths))


def _package_dirs(roots):
    """Installed-package folders under ``roots``: these are hidden, whatever else a root holds."""
    found = set()
    for root in roots:
        for pattern in ("site-packages", "dist-packages", "python*/site-packages", "python*/dist-packages"):
            found.update(os.path.realpath(path) for path in glob.glob(os.path.join(root, pattern)))
    return sorted(found)


def _bind(source, target, flags=0):
    if os.path.isdir(source):
        os.makedirs(target, mode=0o755, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
        if not os.path.exists(target):
            os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))
    _mount(source, target, None, MS_BIND | MS_REC | flags)


def _build_root(new_root, report):
    """Fill the tmpfs at ``new_root`` with what the program may see (bind mounts of the host)."""
    _mount("tmpfs", new_root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
    visible = _stdlib_dirs()
    for directory in SHARED_LIBRARY_DIRS:
        if os.path.islink(directory):  # /lib -> usr/lib on merged-/usr systems: keep the link
            os.symlink(os.readlink(directory), new_root + directory)
        elif os.path.isdir(directory) and not any(directory.startswith(path + os.sep) for path in visible):
            visible.append(directory)
    for path in visible:
        _bind(path, new_root + path)
    for path in _package_dirs(visible):
        if os.path.isdir(new_root + path):  # an empty read-only tmpfs hides what is installed there
            _mount("tmpfs", new_root + path, "tmpfs", MS_NOSUID | MS_NODEV | MS_RDONLY, "size=4k,mode=0555")
    real_executable = os.path.realpath(sys.executable)
    if os.path.isfile(real_executable):
        _bind(real_executable, new_root + real_executable)
    for device in DEVICES:
        if os.path.exists(f"/dev/{device}"):
            _bind(f"/dev/{device}", f"{new_root}/dev/{device}")
    for directory in ("/tmp", "/dev/shm", "/proc"):
        os.makedirs(new_root + directory, mode=0o755, exist_ok=True)
    report["notes"].append("visible: " + ", ".join(visible))


def _pivot_into(new_root):
    os.chdir(new_root)
    # pivot_root(".", ".") stacks the old root on top of the new one; detaching it leaves only ours.
    _syscall(SYS_PIVOT_ROOT[platform.machine()], ctypes.c_char_p(b"."), ctypes.c_char_p(b"."))
    _call("umount2", ctypes.c_char_p(b"."), ctypes.c_int(MNT_DETACH))
    os.chdir("/")


def _make_root_readonly():
    attr = (ctypes.c_uint64 * 4)(MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID, 0, 0, 0)
    _syscall(
        SYS_MOUNT_SETATTR,
        ctypes.c_int(AT_FDCWD),
        ctypes.c_char_p(b"/"),
        ctypes.c_uint(AT_RECURSIVE),
        ctypes.byref(attr),
        ctypes.c_size_t(ctypes.sizeof(attr)),
    )


def _set_up_mounts(config, flags, report):
    """The minimal root (or, where that fails, a read-only view of the host's) with private /tmp."""
    if not flags & CLONE_NEWNS:
        return
    try:
        _mount(None, "/", None, MS_REC | MS_PRIVATE)  # else mounts below could propagate to the host
    except OSError as error:
        report["notes"].append(f"mounts skipped, could not make / private: {error}")
        return
    try:
        _build_root(config["scratch_dir"], report)
        _pivot_into(config["scratch_dir"])
        report["isolation"].append("minimal-root")
    except (OSError, KeyError) as error:
        report["notes"].append(f"the whole file system stays visible: {error}")
    if config["readonly_root"]:
        try:
            _make_root_readonly()
            report["isolation"].append("readonly-root")
        except (OSError, AttributeError) as error:
            report["notes"].append(f"root left writable: {error}")
    options = f"size={config['scratch_mb']}m,mode=1777"
    for target in ("/dev/shm", "/tmp"):
        if os.path.isdir(target):
            _mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, options)
    os.mkdir("/tmp/work", 0o700)
    if _switches_user(config, flags):
        os.chown("/tmp/work", config["uid"], config["gid"])
    os.chdir("/tmp/work")
    report["isolation"].append("private-tmp")
    if flags & CLONE_NEWPID:
        try:
            _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
            report["isolation"].append("private-proc")
        except OSError as error:
            report["notes"].append(f"no /proc: {error}")


# --------------------------------------------------------------------------------------------
# limits, privileges, system calls
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
            # The uid change made the process undumpable, which hides /proc/self from the program
            # itself; restore the normal view (ptrace stays refused by the system call filter).
            _call("prctl", ctypes.c_int(PR_SET_DUMPABLE), ctypes.c_ulong(1), 0, 0, 0)
            if config["own_uid"]:
                report["isolation"].append("own-uid")
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


class _SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    ]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


def seccomp_program(table):
    """Classic BPF for the filter, as ``(code, jt, jf, k)`` tuples (jumps are forward offsets).

    Other ABIs (x32, i386) are refused outright; ``clone`` is refused only with namespace flags;
    ``clone3`` (whose flags sit in memory the filter cannot read) gets ENOSYS, so libc uses ``clone``.
    """
    load_word, jump_eq, jump_ge, jump_set, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    allow, eperm, enosys = 0x7FFF0000, 0x00050000 | 1, 0x00050000 | 38
    namespace_flags = CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER
    namespace_flags |= CLONE_NEWPID | CLONE_NEWNET
    denied = sorted(table["denied"].values())
    allow_at = 4 + 1 + len(denied) + 2  # after the header and the checks below
    clone_at, deny_at, enosys_at = allow_at + 1, allow_at + 4, allow_at + 5

    program = [
        (load_word, 0, 0, 4),  # seccomp_data.arch
        (jump_eq, 1, 0, table["arch"]),
        (ret, 0, 0, eperm),
        (load_word, 0, 0, 0),  # seccomp_data.nr
    ]

    def jump_if(code, value, target):
        program.append((code, target - len(program) - 1, 0, value))

    jump_if(jump_ge, 0x40000000, deny_at)  # x32 system calls
    for number in denied:
        jump_if(jump_eq, number, deny_at)
    jump_if(jump_eq, table["clone"], clone_at)
    jump_if(jump_eq, table["clone3"], enosys_at)
    program.append((ret, 0, 0, allow))
    program.append((load_word, 0, 0, 16))  # low word of args[0]: clone's flags (little-endian)
    program.append((jump_set, 1, 0, namespace_flags))
    program.append((ret, 0, 0, allow))
    program.append((ret, 0, 0, eperm))
    program.append((ret, 0, 0, enosys))
    assert len(program) == enosys_at + 1 and program[allow_at] == (ret, 0, 0, allow)
    return program


def _install_seccomp(report):
    if platform.machine() != "x86_64":
        report["notes"].append(f"no system call filter for {platform.machine()}")
        return
    instructions = seccomp_program(X86_64)
    array = (_SockFilter * len(instructions))(*[_SockFilter(*item) for item in instructions])
    fprog = _SockFprog(len(instructions), array)
    try:
        _call(
            "prctl",
            ctypes.c_int(PR_SET_SECCOMP),
            ctypes.c_ulong(SECCOMP_MODE_FILTER),
            ctypes.byref(fprog),
            0,
            0,
        )
        report["isolation"].append("seccomp")
    except (OSError, AttributeError) as error:
        report["notes"].append(f"no system call filter: {error}")


def isolate(config, program_fds, status_fd):
    """Turn this process into the isolated candidate. Returns the report in the process that runs
    the program; the processes above it (waiters, the namespace init) never return.

    ``program_fds``: the file descriptors the program keeps (its channel to the judge); the waiting
    processes close them so the judge sees end-of-file as soon as the program dies. ``status_fd``:
    where the namespace init writes the program's wait status; the program never holds it.
    """
    report = {"isolation": [], "notes": []}
    flags = _unshare(config, report)
    if flags & CLONE_NEWPID:
        _fork_into_pid_namespace(program_fds)  # now PID 1 of the new namespace
    _set_up_mounts(config, flags, report)  # in PID 1: a fresh /proc needs the new namespace
    if flags & CLONE_NEWPID:
        child = os.fork()
        if child:
            _wait_and_end_like(child, program_fds, status_fd)
    os.close(status_fd)
    if not flags & CLONE_NEWNS:
        os.chdir(config["scratch_dir"])
    # The rest of the environment is the parent's minimal one (sandbox._minimal_env).
    os.environ["HOME"] = os.environ["TMPDIR"] = os.getcwd()
    _set_limits(config, report)
    _drop_privileges(config, flags, report)
    _install_seccomp(report)
    stdlib = os.path.dirname(os.__file__)
    if not os.access(stdlib, os.R_OK | os.X_OK):
        raise SetupError(
            f"the sandbox account cannot read the Python standard library at {stdlib}; pass "
            "SandboxConfig(python=...) pointing at an interpreter installed in a world-readable place"
        )
    missing = [layer for layer in config["require"] if layer not in report["isolation"]]
    if missing:
        raise SetupError(f"required isolation unavailable: {missing}; notes: {json.dumps(report['notes'])}")
    return report
