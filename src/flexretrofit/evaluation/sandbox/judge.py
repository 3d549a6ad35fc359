"""Judge side of :mod:`flexretrofit.evaluation.sandbox`: run trusted tests against an isolated candidate.

Runs in its own ``python -I -S`` interpreter, which loads this file by path and calls :func:`main` with
``CONFIG_JSON`` as ``sys.argv[1]`` (``python -I -S judge.py CONFIG_JSON`` does the same); never
imported by the package. Standard library only (importing ``flexretrofit`` would pull in torch and
transformers).

One run, two processes that share nothing but two pipes:

- the **judge** (this process, trusted) forks the candidate *before* it reads the task, so the
  candidate's copy of memory holds no test, answer or reference; then it reads the task from fd 0,
  runs the trusted ``context`` and ``test`` code and calls ``check(candidate)``, where ``candidate``
  is a proxy: each call sends its arguments to the candidate and returns the candidate's answer;
- the **candidate** (isolated by ``isolation.isolate``, then untrusted) runs the program
  and answers calls of its ``entry_point``.

Only plain data crosses (None, bool, int, float, complex, str, bytes and lists, tuples, dicts, sets and
frozensets of them, plus the standard-library values a solution may return: Counter, OrderedDict,
defaultdict, deque, namedtuples, int and str enums, Fraction, Decimal, ranges, dict views and iterators
such as generators or ``map``), in a tagged JSON encoding that the judge decodes into fresh objects of
its own built-in and standard types; an object with methods of its own cannot cross, so every
comparison the tests make runs on the trusted side with standard semantics. The judge refuses a reply
over the byte limit or with more values than its budget (counted on the raw bytes, before decoding),
so no reply costs it more than a few times the byte limit in memory. The verdict is written by the
judge to ``config["report_fd"]``, which the candidate never holds; nothing the program prints, patches
or reads can change it.

Threat model: the program may do anything the isolation permits, including forging messages on its
pipe (they are only ever decoded as answers) and spending its limits. It can still pass by computing
correct answers, including by hard-coding them: the task's own inputs are what it is shown. A bug in
the kernel, or an exception class whose name the tests catch, is outside what this guards.
"""

import builtins
import collections
import importlib.util
import itertools
import json
import linecache
import os
import resource
import signal
import struct
import sys
import traceback
import types

SETUP_FAILED = 120
HEADER = struct.Struct(">I")
MAX_DEPTH = 64
BYTES_PER_VALUE = 32  # see value_budget
CPU_SLACK_S = 0.5  # how far below the CPU limit rusage may read when the limit fired
_TAGS = {"l": list, "t": tuple, "s": set, "f": frozenset}
_TYPE_TAGS = {list: "l", tuple: "t", set: "s", frozenset: "f"}
# Tags whose payload is [key, value] pairs; "p" (dict_items) is rebuilt as a dict's items view.
_PAIR_TAGS = {"d": dict, "C": collections.Counter, "O": collections.OrderedDict, "p": dict}
# An iterator crosses as a trusted one-shot iterator: it equals nothing but itself, as a generator.
_SEQUENCE_TAGS = {
    "i": lambda items: iter(tuple(items)),
    "k": lambda items: dict.fromkeys(items).keys(),
    "v": lambda items: dict(enumerate(items)).values(),
    "Q": collections.deque,
}
_VIEW_TAGS = {
    type({}.keys()): "k",
    type(collections.OrderedDict().keys()): "k",
    type({}.values()): "v",
    type(collections.OrderedDict().values()): "v",
}
_ITEMS_VIEWS = (type({}.items()), type(collections.OrderedDict().items()))
# Exact types only (a subclass of map could override __next__, harmless but not standard).
_ITERATOR_TYPES = frozenset(
    [types.GeneratorType, map, filter, zip, enumerate, reversed]
    + [kind for kind in vars(itertools).values() if isinstance(kind, type) and hasattr(kind, "__next__")]
    + [
        type(iterator)
        for iterator in (
            iter([]), iter(()), iter(""), iter(b""), iter(bytearray()), iter(set()), iter({}),
            iter({}.values()), iter({}.items()), iter(range(0)), iter(range(1 << 64)),
            reversed([]), reversed(range(0)), reversed(range(1 << 64)), reversed({}),
            reversed({}.values()), reversed({}.items()), iter(collections.OrderedDict()),
            reversed(collections.OrderedDict()), iter(int, 1), iter(collections.deque()),
            reversed(collections.deque()),
        )
    ]
)  # fmt: skip


class CandidateDied(BaseException):
    """The candidate ended (or closed its channel) before answering. Not an ``Exception``: a test's
    ``except Exception`` must not turn a crash into a pass."""


class AnswerRefused(BaseException):
    """The candidate's answer cannot cross (not plain data, too large, malformed); not an
    ``Exception`` either, so a test that expects an error cannot mistake this for it."""


class Unsendable(Exception):
    """Raised by :func:`encode` for a value that cannot cross."""


# --------------------------------------------------------------------------------------------
# messages: length-prefixed JSON of plain data
# --------------------------------------------------------------------------------------------
def value_budget(max_bytes):
    """How many JSON values a message of up to ``max_bytes`` may hold: each value costs the judge
    up to about 80 bytes of objects (an empty list is 3 bytes of JSON, 64 of memory), so this
    keeps its memory for one reply within a few times ``max_bytes``."""
    return max(max_bytes // BYTES_PER_VALUE, 1024)


def count_values(data):
    """An upper bound on the objects ``json.loads(data)`` builds, without building them: every
    container opens with a bracket and every further value follows a comma or colon (those inside
    strings are counted too, which only errs on the safe side)."""
    return data.count(b"[") + data.count(b"{") + data.count(b",") + data.count(b":")


def pack(message):
    return json.dumps(message, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def send(fd, message=None, data=None):
    data = pack(message) if data is None else data
    payload = HEADER.pack(len(data)) + data
    view = memoryview(payload)
    while view:
        view = view[os.write(fd, view) :]


def _read_exactly(fd, size):
    # One buffer filled in place: no list of chunks joined into a second copy.
    buffer = bytearray(size)
    view = memoryview(buffer)
    filled = 0
    while filled < size:
        got = os.readv(fd, [view[filled:]])
        if not got:
            return None
        filled += got
    view.release()
    return buffer


def receive(fd, max_bytes, max_values=None):
    """The next message, or None at end of file. Raises ValueError for a malformed or oversized one,
    or one of more than ``max_values`` values (checked on the raw bytes, before decoding)."""
    header = _read_exactly(fd, HEADER.size)
    if header is None:
        return None
    (size,) = HEADER.unpack(header)
    if size > max_bytes:
        raise ValueError(f"a message of {size} bytes exceeds the limit of {max_bytes}")
    data = _read_exactly(fd, size)
    if data is None:
        return None
    if max_values is not None and count_values(data) > max_values:
        raise ValueError(
            f"a message of more than {max_values} values exceeds the limit "
            f"(one value per {BYTES_PER_VALUE} bytes of the message limit)"
        )
    text = data.decode("ascii")
    del data  # the raw bytes go before the decoded objects arrive
    return json.loads(text)


class _Budget:
    """Values left to encode in one message: stops an endless iterator and oversized answers early."""

    __slots__ = ("left",)

    def __init__(self, values):
        self.left = values

    def spend(self):
        self.left -= 1
        if self.left < 0:
            raise Unsendable("the answer holds too many values to cross (an endless iterator?)")


def encode(value, budget=None, depth=0):
    """Plain data -> JSON-ready tagged form. Raises :class:`Unsendable` for anything else.

    Runs in the candidate for answers, so its reading must not depend on the value's own methods:
    a subclass of a built-in type is read through the built-in type's methods (``dict.items(x)``,
    ``list.__iter__(x)``...), whatever it overrides, and crosses as that built-in type, or as the
    standard-library type it derives from (Counter, OrderedDict). An iterator of a standard type
    (a generator, ``map``, ``zip``, dict views...) is run to its end, up to the budget.
    """
    if depth > MAX_DEPTH:
        raise Unsendable(f"the value is nested deeper than {MAX_DEPTH} levels")
    budget = budget if budget is not None else _Budget(1 << 62)
    budget.spend()
    kind = type(value)
    if value is None or kind in (bool, int, float, str):
        return value
    deeper = depth + 1
    if kind in _TYPE_TAGS:
        return {_TYPE_TAGS[kind]: [encode(item, budget, deeper) for item in value]}
    if kind is dict:
        return {"d": _encode_pairs(dict.items(value), budget, deeper)}
    if kind is bytes:
        return {"b": value.hex()}
    if kind is complex:
        return {"c": [value.real, value.imag]}
    if kind is range:
        return {"r": [value.start, value.stop, value.step]}
    if kind in _VIEW_TAGS:
        return {_VIEW_TAGS[kind]: [encode(item, budget, deeper) for item in value]}
    if kind in _ITEMS_VIEWS:
        return {"p": _encode_pairs(value, budget, deeper)}
    if kind in _ITERATOR_TYPES:
        return {"i": [encode(item, budget, deeper) for item in value]}
    return _encode_derived(value, kind, budget, deeper)


def _encode_pairs(items, budget, depth):
    return [[encode(key, budget, depth), encode(item, budget, depth)] for key, item in items]


def _encode_derived(value, kind, budget, depth):
    """A value whose type derives from a built-in or standard type; see :func:`encode`."""
    # Enum members that are ints or strs (IntEnum, StrEnum) compare equal to their value: they
    # cross as that value. Other Enum members compare by identity only: refused below.
    if issubclass(kind, collections.Counter):
        return {"C": _encode_pairs(dict.items(value), budget, depth)}
    if issubclass(kind, collections.OrderedDict):
        return {"O": _encode_pairs(collections.OrderedDict.items(value), budget, depth)}
    if issubclass(kind, dict):  # defaultdict (its factory stays behind) and other mappings
        return {"d": _encode_pairs(dict.items(value), budget, depth)}
    if issubclass(kind, int):  # bool cannot be subclassed
        return int.__int__(value)
    if issubclass(kind, float):
        return float.__float__(value)
    if issubclass(kind, str):
        return str.__str__(value)
    if issubclass(kind, bytes):
        return {"b": bytes.__getitem__(value, slice(None)).hex()}
    if issubclass(kind, bytearray):
        return {"a": bytearray.__getitem__(value, slice(None)).hex()}
    if issubclass(kind, collections.deque):
        return {"Q": [encode(item, budget, depth) for item in collections.deque.__iter__(value)]}
    for base, tag in ((list, "l"), (tuple, "t"), (set, "s"), (frozenset, "f")):
        if issubclass(kind, base):  # a namedtuple crosses as a tuple, which it equals
            return {tag: [encode(item, budget, depth) for item in base.__iter__(value)]}
    fractions = sys.modules.get("fractions")
    if fractions is not None and issubclass(kind, fractions.Fraction):
        parts = [fractions.Fraction.numerator.fget(value), fractions.Fraction.denominator.fget(value)]
        if all(type(part) is int for part in parts) and parts[1] > 0:
            return {"q": parts}
    decimal = sys.modules.get("decimal")
    if decimal is not None and issubclass(kind, decimal.Decimal):
        text = decimal.Decimal.__str__(value)
        if type(text) is str:
            return {"m": text}
    raise Unsendable(
        f"a value of type {kind.__name__} is not plain data (only built-in values can be compared)"
    )


def decode(form, depth=0):
    """Tagged form -> fresh objects of built-in and standard types. Raises ValueError (or another
    ``Exception``: an unhashable key, a malformed decimal) for anything not made by :func:`encode`."""
    if depth > MAX_DEPTH:
        raise ValueError(f"the value is nested deeper than {MAX_DEPTH} levels")
    kind = type(form)
    if form is None or kind in (bool, int, float, str):
        return form
    if kind is dict and len(form) == 1:
        ((tag, payload),) = form.items()
        deeper = depth + 1
        if tag in _TAGS and type(payload) is list:
            return _TAGS[tag](decode(item, deeper) for item in payload)
        if tag in _PAIR_TAGS and type(payload) is list:
            pairs = [item for item in payload if type(item) is list and len(item) == 2]
            if len(pairs) == len(payload):
                mapping = _PAIR_TAGS[tag]()
                for key, item in pairs:
                    mapping[decode(key, deeper)] = decode(item, deeper)
                return mapping.items() if tag == "p" else mapping
        if tag in _SEQUENCE_TAGS and type(payload) is list:
            return _SEQUENCE_TAGS[tag]([decode(item, deeper) for item in payload])
        if tag == "b" and type(payload) is str:
            return bytes.fromhex(payload)
        if tag == "a" and type(payload) is str:
            return bytearray.fromhex(payload)
        if tag == "c" and _numbers(payload, 2, (int, float)):
            return complex(payload[0], payload[1])
        if tag == "r" and _numbers(payload, 3, (int,)) and payload[2] != 0:
            return range(*payload)
        if tag == "q" and _numbers(payload, 2, (int,)) and payload[1] > 0:
            from fractions import Fraction

            return Fraction(payload[0], payload[1])
        if tag == "m" and type(payload) is str:
            from decimal import Decimal

            return Decimal(payload)  # a malformed one raises decimal.InvalidOperation
    raise ValueError("the candidate answered with something that is not plain data")


def _numbers(payload, count, kinds):
    return type(payload) is list and len(payload) == count and all(type(part) in kinds for part in payload)


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
    max_values = value_budget(max_bytes)
    while True:
        call = receive(requests_fd, max_bytes)
        if call is None:
            _flush()
            os._exit(0)
        data = _answer(function, call, max_bytes, max_values)
        _flush()
        send(replies_fd, data=data)


def _answer(function, call, max_bytes, max_values):
    """The reply to one call, packed: its value, the exception it raised, or why it cannot cross."""
    try:
        value = function(*decode(call["args"]), **decode(call["kwargs"]))
        reply = {"value": encode(value, _Budget(max_values))}
        data = pack(reply)
    except Unsendable as error:
        return pack({"unsendable": _error_text(error, with_name=False)})
    except BaseException as error:  # raised by the function, or by an iterator it returned
        return pack({"raised": [type(error).__name__, _error_text(error, with_name=False)]})
    if len(data) > max_bytes or count_values(data) > max_values:
        return pack(
            {"unsendable": f"the answer is over the limit of {max_bytes} bytes / {max_values} values"}
        )
    return data


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
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "isolation.py")
    spec = importlib.util.spec_from_file_location("sandbox_isolation", path)
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
        self._max_values = value_budget(max_bytes)

    def __call__(self, *args, **kwargs):
        budget = _Budget(self._max_values)
        request = {"args": encode(args, budget), "kwargs": encode(kwargs, budget)}
        try:
            send(self._requests_fd, request)
            reply = receive(self._replies_fd, self._max_bytes, self._max_values)
        except OSError as error:
            raise CandidateDied(str(error)) from None
        except Exception as error:  # oversized, too many values, not JSON, nested too deep
            raise AnswerRefused(f"the answer cannot be read: {_error_text(error)}") from None
        if reply is None:
            raise CandidateDied("the program ended before it answered")
        if type(reply) is dict and "raised" in reply:
            raise _exception_from(reply["raised"])
        if type(reply) is dict and type(reply.get("unsendable")) is str:
            raise AnswerRefused(f"the answer cannot cross: {reply['unsendable'][:2000]}")
        if type(reply) is not dict or "value" not in reply:
            raise AnswerRefused("the candidate sent a malformed reply")
        try:
            return decode(reply["value"])
        except Exception as error:
            raise AnswerRefused(f"the answer is not plain data: {_error_text(error)}") from None


def _exception_from(raised):
    """A built-in exception class of the same name (so tests that expect one work), else RuntimeError."""
    if type(raised) is list and len(raised) == 2 and all(type(part) is str for part in raised):
        name, message = raised
        kind = getattr(builtins, name, None)
        if isinstance(kind, type) and issubclass(kind, Exception) and not issubclass(kind, StopIteration):
            return kind(message)
        return RuntimeError(message)
    return RuntimeError("the candidate raised an exception")


def _ended(child, status_fd, reason, cpu_s, started=True):
    """Verdict once the candidate is gone: how it ended (wait for the waiter process above it; with a
    PID namespace its init wrote the program's own wait status). ``started``: the trusted hello arrived, so
    set-up succeeded and any exit status, SETUP_FAILED's included, is the program's own."""
    # wait4's usage covers the waited-for processes below (the namespace init, the program).
    _, status, usage = os.wait4(child, 0)
    cpu_used = usage.ru_utime + usage.ru_stime
    os.set_blocking(status_fd, False)
    try:
        written = os.read(status_fd, 32)
    except BlockingIOError:
        written = b""
    if written.isdigit():
        status = int(written)
    code = os.waitstatus_to_exitcode(status)
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        # RLIMIT_CPU sends SIGXCPU, then SIGKILL, only once the CPU time is spent; a program that
        # kills itself (or is killed for memory) earlier did not run out of time.
        if signum in (signal.SIGXCPU, signal.SIGKILL) and cpu_used >= _cpu_limit(cpu_s) - CPU_SLACK_S:
            reason = f"{reason}: CPU limit (signal {signum} after {cpu_used:.1f} s of CPU)"
            return {"verdict": "timeout", "reason": reason, "returncode": code}
        reason = f"{reason}: killed by signal {signum} ({_signal_name(signum)}) after {cpu_used:.1f} s of CPU"
        return {"verdict": "failed", "reason": reason, "returncode": code}
    if code == SETUP_FAILED and not started:
        return {
            "verdict": "error",
            "reason": "the sandbox could not be set up (see stderr)",
            "returncode": code,
        }
    return {"verdict": "failed", "reason": f"{reason} (exit status {code})", "returncode": code}


def _cpu_limit(cpu_s):
    """The CPU seconds after which the candidate gets SIGXCPU: ``cpu_s``, or a lower inherited hard limit."""
    hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    return cpu_s if hard == resource.RLIM_INFINITY else min(cpu_s, hard)


def _signal_name(signum):
    try:
        return signal.Signals(signum).name
    except ValueError:
        return "unknown"


def _failure(error):
    lines = traceback.format_exception(type(error), error, error.__traceback__, limit=-3)
    return "".join(lines)[-4000:]


def judge(task, child, status_fd, requests_fd, replies_fd, max_bytes, cpu_s):
    hello = receive(replies_fd, max_bytes)  # sent before the program started: trusted
    if hello is None:
        return _ended(child, status_fd, "the sandbox did not start", cpu_s, started=False)
    outcome = {"isolation": hello["isolation"], "notes": hello["notes"]}
    try:
        send(requests_fd, {"program": task["program"], "entry_point": task["entry_point"]})
        loaded = receive(replies_fd, max_bytes, value_budget(max_bytes))
    except (OSError, ValueError, RecursionError) as error:
        return {**outcome, **_ended(child, status_fd, f"the program broke its channel ({error})", cpu_s)}
    if loaded is None:
        return {**outcome, **_ended(child, status_fd, "the program ended while it was loading", cpu_s)}
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
        return {**outcome, **_ended(child, status_fd, str(error), cpu_s)}
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
        max_bytes, cpu_s = config["max_message_bytes"], config["cpu_s"]
        outcome = judge(task, child, status_read, requests_write, replies_read, max_bytes, cpu_s)
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
