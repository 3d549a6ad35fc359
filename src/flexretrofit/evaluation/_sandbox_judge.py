"""Judge side of :mod:`flexretrofit.evaluation.sandbox`: run trusted tests against an isolated candidate.

Run as a script, never imported by the package: ``python -I -S _sandbox_judge.py CONFIG_JSON``.
Standard library only (importing ``flexretrofit`` would pull in torch and transformers).

One run, two processes that share nothing but two pipes:

- the **judge** (this process, trusted) forks the candidate *before* it reads the task, so the
  candidate's copy of memory holds no test, answer or reference; then it reads the task from fd 0,
  runs the trusted ``context`` and ``test`` code and calls ``check(candidate)``, where ``candidate``
  is a proxy: each call sends its arguments to the candidate and returns the candidate's answer;
- the **candidate** (isolated by ``_sandbox_isolation.isolate``, then untrusted) runs the program
  and answers calls of its ``entry_point``.

Only plain data crosses (None, bool, int, float, complex, str, bytes and lists, tuples, dicts, sets and
frozensets of them), in a tagged JSON encoding that the judge decodes into fresh built-in objects; an
object with methods of its own cannot cross, so every comparison the tests make runs on the trusted
side with built-in semantics. The verdict is written by the judge to ``config["report_fd"]``, which
the candidate never holds; nothing the program prints, patches or reads can change it.

Threat model: the program may do anything the isolation permits, including forging messages on its
pipe (they are only ever decoded as answers) and spending its limits. It can still pass by computing
correct answers, including by hard-coding them: the task's own inputs are what it is shown. A bug in
the kernel, or an exception class whose name the tests catch, is outside what this guards.
"""

import builtins
import importlib.util
import json
import linecache
import os
import signal
import struct
import sys
import traceback

SETUP_FAILED = 120
HEADER = struct.Struct(">I")
MAX_DEPTH = 64
_TAGS = {"l": list, "t": tuple, "s": set, "f": frozenset}
_TYPE_TAGS = {list: "l", tuple: "t", set: "s", frozenset: "f"}


class CandidateDied(Exception):
    """The candidate ended (or closed its channel) before answering."""


# --------------------------------------------------------------------------------------------
# messages: length-prefixed JSON of plain data
# --------------------------------------------------------------------------------------------
def send(fd, message):
    data = json.dumps(message, ensure_ascii=True).encode("ascii")
    payload = HEADER.pack(len(data)) + data
    view = memoryview(payload)
    while view:
        view = view[os.write(fd, view) :]


def _read_exactly(fd, size):
    chunks, remaining = [], size
    while remaining:
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def receive(fd, max_bytes):
    """The next message, or None at end of file. Raises ValueError for a malformed or oversized one."""
    header = _read_exactly(fd, HEADER.size)
    if header is None:
        return None
    (size,) = HEADER.unpack(header)
    if size > max_bytes:
        raise ValueError(f"a message of {size} bytes exceeds the limit of {max_bytes}")
    data = _read_exactly(fd, size)
    if data is None:
        return None
    return json.loads(data.decode("ascii"))


def encode(value, depth=0):
    """Plain data -> JSON-ready tagged form. Raises TypeError for anything else."""
    if depth > MAX_DEPTH:
        raise TypeError(f"the value is nested deeper than {MAX_DEPTH} levels")
    kind = type(value)
    if value is None or kind in (bool, int, float, str):
        return value
    if kind in _TYPE_TAGS:
        return {_TYPE_TAGS[kind]: [encode(item, depth + 1) for item in value]}
    if kind is dict:
        return {"d": [[encode(key, depth + 1), encode(item, depth + 1)] for key, item in value.items()]}
    if kind is bytes:
        return {"b": value.hex()}
    if kind is complex:
        return {"c": [value.real, value.imag]}
    raise TypeError(f"a {kind.__name__} is not plain data (only built-in values can be compared)")


def decode(form, depth=0):
    """Tagged form -> fresh built-in objects. Raises ValueError for anything not made by :func:`encode`."""
    if depth > MAX_DEPTH:
        raise ValueError(f"the value is nested deeper than {MAX_DEPTH} levels")
    kind = type(form)
    if form is None or kind in (bool, int, float, str):
        return form
    if kind is dict and len(form) == 1:
        ((tag, payload),) = form.items()
        if tag in _TAGS and type(payload) is list:
            return _TAGS[tag](decode(item, depth + 1) for item in payload)
        if tag == "d" and type(payload) is list:
            pairs = [item for item in payload if type(item) is list and len(item) == 2]
            if len(pairs) == len(payload):
                return {decode(key, depth + 1): decode(item, depth + 1) for key, item in pairs}
        if tag == "b" and type(payload) is str:
            return bytes.fromhex(payload)
        if tag == "c" and type(payload) is list and len(payload) == 2:
            if all(type(part) in (int, float) for part in payload):
                return complex(payload[0], payload[1])
    raise ValueError("the candidate answered with something that is not plain data")


# --------------------------------------------------------------------------------------------
# the candidate (untrusted once the program starts)
# --------------------------------------------------------------------------------------------
def _error_text(error, with_name=True):
    try:
        text = str(error)[:2000]
    except BaseException:  # a hostile __str__
        text = "(an exception that cannot be printed)"
    return f"{type(error).__name__}: {text}" if with_name else text


def _flush():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass


def serve(requests_fd, replies_fd, report, max_bytes):
    """Run the program, then answer calls until the judge hangs up. Never returns."""
    send(replies_fd, {"isolation": report["isolation"], "notes": report["notes"]})
    task = receive(requests_fd, max_bytes)
    if task is None:
        os._exit(0)
    source, entry_point = task["program"], task["entry_point"]
    linecache.cache["program.py"] = (len(source), None, source.splitlines(True), "program.py")
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    serving = os.getpid()
    try:
        exec(compile(source, "program.py", "exec"), namespace)
        function = namespace.get(entry_point) if entry_point else None
        if entry_point and not callable(function):
            raise NameError(f"the program defines no function named {entry_point!r}")
    except BaseException as error:  # SystemExit and KeyboardInterrupt too: the program did not finish
        traceback.print_exc()
        _flush()
        if os.getpid() != serving:  # a process the program forked: not the one that answers
            os._exit(1)
        send(replies_fd, {"loaded": False, "error": _error_text(error)})
        os._exit(1)
    _flush()  # what the program printed is in its output even if the judge ends the run next
    send(replies_fd, {"loaded": True})
    while True:
        call = receive(requests_fd, max_bytes)
        if call is None:
            _flush()
            os._exit(0)
        try:
            reply = {"value": encode(function(*decode(call["args"]), **decode(call["kwargs"])))}
        except BaseException as error:
            reply = {"raised": [type(error).__name__, _error_text(error, with_name=False)]}
        _flush()
        send(replies_fd, reply)


def become_candidate(config, closing, requests_fd, replies_fd, status_fd):
    """In the forked child: drop every handle of the judge's, isolate, serve. Never returns."""
    try:
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)  # the task file stays the judge's
        os.close(devnull)
        for fd in closing:
            os.close(fd)
        isolation = _load_isolation()
        report = isolation.isolate(config, [requests_fd, replies_fd], status_fd)
        serve(requests_fd, replies_fd, report, config["max_message_bytes"])
    except BaseException as error:
        sys.stderr.write(f"sandbox setup failed: {_error_text(error)}\n")
        _flush()
    os._exit(SETUP_FAILED)


def _load_isolation():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_sandbox_isolation.py")
    spec = importlib.util.spec_from_file_location("_sandbox_isolation", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------------------------
# the judge (trusted)
# --------------------------------------------------------------------------------------------
class Candidate:
    """Stands for the program's function inside the trusted tests: a call crosses as plain data."""

    def __init__(self, requests_fd, replies_fd, max_bytes):
        self._requests_fd, self._replies_fd, self._max_bytes = requests_fd, replies_fd, max_bytes

    def __call__(self, *args, **kwargs):
        try:
            send(self._requests_fd, {"args": encode(args), "kwargs": encode(kwargs)})
            reply = receive(self._replies_fd, self._max_bytes)
        except OSError as error:
            raise CandidateDied(str(error)) from None
        if reply is None:
            raise CandidateDied("the program ended before it answered")
        if type(reply) is not dict:
            raise ValueError("the candidate sent a malformed reply")
        if "raised" in reply:
            raise _exception_from(reply["raised"])
        if "value" not in reply:
            raise ValueError("the candidate sent a malformed reply")
        return decode(reply["value"])


def _exception_from(raised):
    """A built-in exception class of the same name (so tests that expect one work), else RuntimeError."""
    if type(raised) is list and len(raised) == 2 and all(type(part) is str for part in raised):
        name, message = raised
        kind = getattr(builtins, name, None)
        if isinstance(kind, type) and issubclass(kind, Exception) and not issubclass(kind, StopIteration):
            return kind(message)
        return RuntimeError(message)
    return RuntimeError("the candidate raised an exception")


def _ended(child, status_fd, reason, started=True):
    """Verdict once the candidate is gone: how it ended (wait for the waiter process above it; with a
    PID namespace its init wrote the program's own wait status). ``started``: the trusted hello arrived, so
    set-up succeeded and any exit status, SETUP_FAILED's included, is the program's own."""
    status = os.waitpid(child, 0)[1]
    os.set_blocking(status_fd, False)
    try:
        written = os.read(status_fd, 32)
    except BlockingIOError:
        written = b""
    if written.isdigit():
        status = int(written)
    code = os.waitstatus_to_exitcode(status)
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) in (signal.SIGXCPU, signal.SIGKILL):
        return {"verdict": "timeout", "reason": f"{reason}: CPU limit (signal {-code})", "returncode": code}
    if code == SETUP_FAILED and not started:
        return {
            "verdict": "error",
            "reason": "the sandbox could not be set up (see stderr)",
            "returncode": code,
        }
    return {"verdict": "failed", "reason": f"{reason} (exit status {code})", "returncode": code}


def _failure(error):
    lines = traceback.format_exception(type(error), error, error.__traceback__, limit=-3)
    return "".join(lines)[-4000:]


def judge(task, child, status_fd, requests_fd, replies_fd, max_bytes):
    hello = receive(replies_fd, max_bytes)  # sent before the program started: trusted
    if hello is None:
        return _ended(child, status_fd, "the sandbox did not start", started=False)
    outcome = {"isolation": hello["isolation"], "notes": hello["notes"]}
    try:
        send(requests_fd, {"program": task["program"], "entry_point": task["entry_point"]})
        loaded = receive(replies_fd, max_bytes)
    except (OSError, ValueError) as error:
        return {**outcome, **_ended(child, status_fd, f"the program broke its channel ({error})")}
    if loaded is None:
        return {**outcome, **_ended(child, status_fd, "the program ended while it was loading")}
    if type(loaded) is not dict or loaded.get("loaded") is not True:
        error = loaded.get("error") if type(loaded) is dict else None
        return {**outcome, "verdict": "failed", "reason": f"the program did not load: {error}"}
    if not task["test"]:
        return {**outcome, "verdict": "passed", "reason": "the program ran to its end"}
    namespace = {"__name__": "__judge__", "__builtins__": builtins}
    try:
        exec(compile(task["context"], "context.py", "exec"), namespace)
        exec(compile(task["test"], "test.py", "exec"), namespace)
        check = namespace["check"]
    except BaseException as error:
        return {
            **outcome,
            "verdict": "error",
            "reason": f"the tests themselves do not run: {_failure(error)}",
        }
    candidate = Candidate(requests_fd, replies_fd, max_bytes)
    try:
        check(candidate)
    except CandidateDied as error:
        return {**outcome, **_ended(child, status_fd, str(error))}
    except BaseException as error:  # an assertion, or anything the candidate's answers made the tests do
        return {**outcome, "verdict": "failed", "reason": _failure(error)}
    return {**outcome, "verdict": "passed", "reason": ""}


def _read_task():
    chunks = []
    while chunk := os.read(0, 1 << 20):
        chunks.append(chunk)
    return json.loads(b"".join(chunks).decode("ascii"))


def main():
    config = json.loads(sys.argv[1])
    sys.set_int_max_str_digits(0)  # an exact big integer is an answer like any other
    report_fd = config["report_fd"]
    requests_read, requests_write = os.pipe()
    replies_read, replies_write = os.pipe()
    status_read, status_write = os.pipe()
    child = os.fork()
    if child == 0:
        closing = [report_fd, requests_write, replies_read, status_read]
        become_candidate(config, closing, requests_read, replies_write, status_write)
    for fd in (requests_read, replies_write, status_write):
        os.close(fd)
    try:
        task = _read_task()
        outcome = judge(task, child, status_read, requests_write, replies_read, config["max_message_bytes"])
    except BaseException as error:
        outcome = {"verdict": "error", "reason": f"the judge failed: {_failure(error)}"}
    os.write(report_fd, json.dumps(outcome, ensure_ascii=True).encode("ascii"))
    os.close(report_fd)
    try:
        os.kill(child, signal.SIGKILL)  # its namespace init dies with it (PR_SET_PDEATHSIG)
    except ProcessLookupError:
        pass
    os._exit(0)


if __name__ == "__main__":
    main()
