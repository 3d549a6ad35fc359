import errno
import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from flexretrofit.evaluation import results as results_module
from flexretrofit.evaluation.results import (
    ResultsFileError,
    ResultsWriteError,
    ResultsWriter,
    read_results,
    write_summary,
)


def _ids(path):
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


def test_rows_are_appended_and_reloaded(tmp_path):
    path = tmp_path / "out" / "samples.jsonl"
    with ResultsWriter(path) as writer:
        for index in range(3):
            writer.write({"id": f"ex{index}", "correct": index % 2 == 0, "text": "naïve ✓"})
        assert "ex1" in writer and "ex9" not in writer and len(writer) == 3
    reopened = ResultsWriter(path)
    assert [row["id"] for row in reopened.rows] == ["ex0", "ex1", "ex2"]
    assert reopened.rows[0]["text"] == "naïve ✓"
    reopened.close()


def test_crash_with_truncated_last_line_then_rerun_has_no_duplicates_or_losses(tmp_path):
    path = tmp_path / "samples.jsonl"
    all_ids = [f"ex{index}" for index in range(10)]
    with ResultsWriter(path) as writer:
        for row_id in all_ids[:6]:
            writer.write({"id": row_id, "value": row_id.upper()})
    # The crash: the 7th row was half written.
    with open(path, "ab") as handle:
        handle.write(b'{"id": "ex6", "val')
    assert read_results(path)[-1]["id"] == "ex5"

    with ResultsWriter(path) as writer:  # the rerun
        assert writer.done_ids == frozenset(all_ids[:6])
        assert path.read_bytes().endswith(b"\n")  # the partial line is gone from the file
        for row_id in all_ids:
            if row_id not in writer:
                writer.write({"id": row_id, "value": row_id.upper()})
    assert _ids(path) == all_ids
    assert all(
        json.loads(line)["value"] == json.loads(line)["id"].upper() for line in path.read_text().splitlines()
    )


def test_a_real_process_killed_mid_run_resumes_cleanly(tmp_path):
    path = tmp_path / "samples.jsonl"
    module_path = Path(results_module.__file__)
    script = textwrap.dedent(
        f"""
        import importlib.util, os
        spec = importlib.util.spec_from_file_location("results", {str(module_path)!r})
        results = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(results)
        writer = results.ResultsWriter({str(path)!r})
        for index in range(4):
            writer.write({{"id": f"ex{{index}}"}})
        writer._file.write(b'{{"id": "ex4", "trunc')  # the process dies in the middle of a write
        writer._file.flush()
        os._exit(9)
        """
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert completed.returncode == 9, completed.stderr.decode()
    with ResultsWriter(path) as writer:
        assert sorted(writer.done_ids) == ["ex0", "ex1", "ex2", "ex3"]
        writer.write({"id": "ex4"})
    assert _ids(path) == ["ex0", "ex1", "ex2", "ex3", "ex4"]


def test_damaged_complete_last_line_is_dropped_but_damage_in_the_middle_is_an_error(tmp_path):
    path = tmp_path / "samples.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b"\n')
    with ResultsWriter(path) as writer:
        assert writer.done_ids == {"a"}
    assert path.read_text() == '{"id": "a"}\n'

    path.write_text('{"id": "a"}\nnot json\n{"id": "c"}\n')
    with pytest.raises(ValueError, match="line 2"):
        ResultsWriter(path)


def test_a_damaged_row_is_named_by_its_line_in_the_file_not_within_the_row(tmp_path):
    path = tmp_path / "samples.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b"}\n{"id": "c"}\n{"id": "d", oops}\n{"id": "e"}\n')
    with pytest.raises(ResultsFileError) as caught:
        read_results(path)
    message = str(caught.value)
    assert "line 4 is not a JSON object" in message and "line 1" not in message
    assert "column 13" in message


def test_duplicate_and_id_less_rows_are_refused(tmp_path):
    with ResultsWriter(tmp_path / "samples.jsonl") as writer:
        writer.write({"id": 1})
        with pytest.raises(ValueError, match="already has"):
            writer.write({"id": 1})
        with pytest.raises(ValueError, match="no 'id'"):
            writer.write({"value": 2})
    with ResultsWriter(tmp_path / "keyed.jsonl", id_key="task") as writer:
        writer.write({"task": "t1"})
        assert "t1" in writer
    with pytest.raises(ValueError, match="closed"):
        writer.write({"task": "t2"})


def test_concurrent_writes_keep_every_row_intact(tmp_path):
    path = tmp_path / "samples.jsonl"
    with ResultsWriter(path) as writer:
        threads = [
            threading.Thread(
                target=lambda k=k: [writer.write({"id": f"{k}-{i}", "pad": "x" * 500}) for i in range(25)]
            )
            for k in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    ids = _ids(path)
    assert len(ids) == len(set(ids)) == 100


def test_summary_is_written_atomically(tmp_path):
    target = tmp_path / "summary.json"
    write_summary(target, {"accuracy": 0.5, "ci95": [0.2, 0.8]})
    write_summary(target, {"accuracy": 0.75})
    assert json.loads(target.read_text()) == {"accuracy": 0.75}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]  # no temp files left
    with pytest.raises(TypeError):
        write_summary(target, {"bad": object()})
    assert json.loads(target.read_text()) == {"accuracy": 0.75}  # the old summary survives a failed write
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


class _DiskFullFile:
    """A results file whose next write stores half the bytes, then fails as a full disk does."""

    def __init__(self, real):
        self.real = real

    def write(self, data):
        self.real.write(bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self.real, name)


@pytest.mark.parametrize("cut_fails", [False, True])
def test_a_full_disk_mid_row_is_one_line_and_the_rerun_keeps_every_finished_row(
    tmp_path, monkeypatch, cut_fails
):
    path = tmp_path / "samples.jsonl"
    writer = ResultsWriter(path)
    writer.write({"id": "ex0"})
    writer.write({"id": "ex1"})
    writer._file = _DiskFullFile(writer._file)
    if cut_fails:  # the torn line stays in the file: reopening must repair it
        monkeypatch.setattr(results_module.os, "ftruncate", lambda *args: _raise_disk_full())
    with pytest.raises(ResultsWriteError) as caught:
        writer.write({"id": "ex2", "text": "x" * 50})
    monkeypatch.undo()
    assert str(caught.value) == (
        f"could not write results to {path}: No space left on device; free space and rerun the same "
        "command: finished rows are kept"
    )
    assert isinstance(caught.value, OSError) and caught.value.errno == errno.ENOSPC
    assert "ex2" not in writer and len(writer) == 2
    writer.close()
    assert path.read_bytes().endswith(b"\n") != cut_fails  # cut at once, or left for the rerun
    with ResultsWriter(path) as rerun:
        assert rerun.done_ids == {"ex0", "ex1"}
        rerun.write({"id": "ex2"})
    assert _ids(path) == ["ex0", "ex1", "ex2"]


def _raise_disk_full():
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_while_writing_the_summary_keeps_the_old_one_and_leaves_no_temp_file(
    tmp_path, monkeypatch
):
    target = tmp_path / "summary.json"
    write_summary(target, {"accuracy": 0.5})
    monkeypatch.setattr(results_module.os, "fsync", lambda *args: _raise_disk_full())
    with pytest.raises(ResultsWriteError, match=r"could not write results to .*summary\.json: No space left"):
        write_summary(target, {"accuracy": 0.75})
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"accuracy": 0.5}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]
