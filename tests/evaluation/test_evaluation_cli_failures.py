"""The evaluation command lines when the disk, the output folder, the shards or the settings go wrong:
one line on stderr, a nonzero exit, and every finished row kept for the rerun."""

import errno
import json
import os
from pathlib import Path

import pytest

from flexretrofit.evaluation import cli, results
from flexretrofit.evaluation.harness import SAMPLES_FILE, SUMMARY_FILE
from flexretrofit.testing import build_tiny_tokenizer, save_tiny_llada_checkpoint

# Synthetic problems written for this test, in the GSM8K JSONL layout.
PROBLEMS = [
    {"question": f"Ann has {n} pens and buys 2 more. How many pens?", "answer": f"#### {n + 2}"}
    for n in range(5)
]
DISK_FULL = os.strerror(errno.ENOSPC)


@pytest.fixture(scope="module")
def llada_folder(tmp_path_factory):
    return save_tiny_llada_checkpoint(tmp_path_factory.mktemp("llada"), tokenizer=build_tiny_tokenizer())


@pytest.fixture(scope="module")
def gsm8k_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "problems.jsonl"
    path.write_text("".join(json.dumps(problem) + "\n" for problem in PROBLEMS))
    return path


def _args(llada_folder, gsm8k_file, output_dir, *extra):
    return [
        "--model", str(llada_folder), "--sampler", "mdm", "--steps", "4", "--gen-length", "4",
        "--block-length", "4", "--batch-size", "1", "--no-progress", "--data", str(gsm8k_file),
        "--output-dir", str(output_dir), *extra,
    ]  # fmt: skip


def _infill_args(llada_folder, output_dir):
    return [
        "--model", str(llada_folder), "--sampler", "mdm", "--steps", "4", "--gen-length", "4",
        "--block-length", "4", "--limit", "1", "--no-progress", "--output-dir", str(output_dir),
    ]  # fmt: skip


def _stopped(main, args, capsys, code=2):
    """Run an entry point that must stop; return its one line of stderr (log lines aside)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        main(args)
    assert stopped.value.code == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


def _row_ids(output_dir):
    return [
        json.loads(line)["id"]
        for path in sorted((Path(output_dir) / "shards").glob("*.jsonl"))
        for line in path.read_text().splitlines()
    ]


@pytest.fixture
def no_model_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the inputs were checked")

    monkeypatch.setattr(cli, "load_model", refuse)


# ------------------------------------------------------------------------------------------------
# a full disk
# ------------------------------------------------------------------------------------------------
def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, DISK_FULL)


class _FillsUp:
    """The shard file of a disk that fills up after ``room`` rows: the next row is half written."""

    def __init__(self, real, room):
        self.real, self.room = real, room

    def write(self, data):
        if self.room == 0:
            self.real.write(bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, DISK_FULL)
        self.room -= 1
        return self.real.write(data)

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_a_full_disk_while_appending_a_row_is_one_line_and_the_rerun_resumes(
    llada_folder, gsm8k_file, tmp_path, monkeypatch, capsys
):
    real_open = open

    def open_on_a_full_disk(path, mode="r", *args, **kwargs):
        handle = real_open(path, mode, *args, **kwargs)
        return _FillsUp(handle, room=2) if mode == "ab" else handle

    monkeypatch.setattr(results, "open", open_on_a_full_disk, raising=False)
    # The cut of the torn row fails too (still no space): the rerun must drop it.
    monkeypatch.setattr(results.os, "ftruncate", _disk_full)
    line = _stopped(cli.gsm8k_main, _args(llada_folder, gsm8k_file, tmp_path), capsys, code=1)
    shard = tmp_path / "shards" / "rank000-of-001.jsonl"
    assert line == (
        f"error: could not write results to {shard}: {DISK_FULL}; free space and rerun the same command: "
        "finished rows are kept"
    )
    assert not shard.read_bytes().endswith(b"\n")  # the half-written row is still there
    monkeypatch.undo()

    summary = cli.gsm8k_main(_args(llada_folder, gsm8k_file, tmp_path))
    assert summary["num_rows"] == len(PROBLEMS) and summary["this_run"]["rows_written_by_this_process"] == 3
    assert len(set(_row_ids(tmp_path))) == len(_row_ids(tmp_path)) == len(PROBLEMS)  # no torn or lost row


def test_a_full_disk_while_writing_the_summary_is_one_line_and_the_rerun_writes_it(
    llada_folder, gsm8k_file, tmp_path, monkeypatch, capsys
):
    real_replace = os.replace

    def replace_on_a_full_disk(source, target):
        if Path(target).name == SUMMARY_FILE:
            raise OSError(errno.ENOSPC, DISK_FULL)
        real_replace(source, target)

    monkeypatch.setattr(results.os, "replace", replace_on_a_full_disk)
    line = _stopped(cli.gsm8k_main, _args(llada_folder, gsm8k_file, tmp_path), capsys, code=1)
    assert line.startswith(f"error: could not write results to {tmp_path / SUMMARY_FILE}: {DISK_FULL};")
    assert not (tmp_path / SUMMARY_FILE).exists() and len(_row_ids(tmp_path)) == len(PROBLEMS)
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".")]  # no temp file left
    monkeypatch.undo()

    summary = cli.gsm8k_main(_args(llada_folder, gsm8k_file, tmp_path))
    assert summary["this_run"]["rows_written_by_this_process"] == 0 and (tmp_path / SUMMARY_FILE).exists()


def test_a_full_disk_met_elsewhere_names_the_output_folder(
    llada_folder, gsm8k_file, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(cli, "run_benchmark", _disk_full)
    line = _stopped(cli.gsm8k_main, _args(llada_folder, gsm8k_file, tmp_path), capsys, code=1)
    assert line.startswith(f"error: could not write results to {tmp_path}: {DISK_FULL}; free space")


# ------------------------------------------------------------------------------------------------
# an output folder that cannot be created
# ------------------------------------------------------------------------------------------------
def test_an_output_dir_under_a_file_stops_before_the_model(
    llada_folder, gsm8k_file, tmp_path, capsys, no_model_loading
):
    a_file = tmp_path / "somefile"
    a_file.write_text("not a folder\n")
    for main, args in (
        (cli.gsm8k_main, _args(llada_folder, gsm8k_file, a_file / "out")),
        (cli.infill_main, _infill_args(llada_folder, a_file / "out" / "deeper")),
    ):
        line = _stopped(main, args, capsys)
        assert f"cannot be created: {a_file} is a file, not a folder" in line
    assert a_file.read_text() == "not a folder\n"


# ------------------------------------------------------------------------------------------------
# --merge-only before every shard has run
# ------------------------------------------------------------------------------------------------
def test_merge_only_with_a_missing_shard_names_it_and_writes_no_summary(
    llada_folder, gsm8k_file, tmp_path, capsys
):
    line = _stopped(cli.gsm8k_main, _args(llada_folder, gsm8k_file, tmp_path, "--merge-only"), capsys)
    assert "holds no results yet (5 rows missing); rerun the same command without --merge-only" in line

    shard = ["--num-shards", "2", "--shard-index"]
    cli.gsm8k_main(_args(llada_folder, gsm8k_file, tmp_path, *shard, "1"))
    line = _stopped(cli.gsm8k_main, _args(llada_folder, gsm8k_file, tmp_path, "--merge-only"), capsys)
    assert "3 of 5 rows are missing in shard(s) shards/rank000-of-002.jsonl (no file)" in line
    assert "rerun the same command without --merge-only" in line
    assert not (tmp_path / SUMMARY_FILE).exists()

    cli.gsm8k_main(_args(llada_folder, gsm8k_file, tmp_path, *shard, "0"))
    (tmp_path / SUMMARY_FILE).unlink()
    summary = cli.gsm8k_main(_args(llada_folder, gsm8k_file, tmp_path, "--merge-only"))
    assert summary["num_rows"] == len(PROBLEMS) and (tmp_path / SUMMARY_FILE).exists()


def test_a_partly_written_shard_is_named_with_the_count_of_its_missing_rows(
    llada_folder, gsm8k_file, tmp_path, capsys
):
    for index in ("0", "1"):
        cli.gsm8k_main(_args(llada_folder, gsm8k_file, tmp_path, "--num-shards", "2", "--shard-index", index))
    for name in (SAMPLES_FILE, SUMMARY_FILE):
        (tmp_path / name).unlink()
    shard = tmp_path / "shards" / "rank000-of-002.jsonl"
    shard.write_text(shard.read_text().splitlines(keepends=True)[0])  # 2 of its 3 rows are gone
    line = _stopped(cli.gsm8k_main, _args(llada_folder, gsm8k_file, tmp_path, "--merge-only"), capsys)
    assert "2 of 5 rows are missing in shard(s) shards/rank000-of-002.jsonl (2 rows missing)" in line
    assert not (tmp_path / SUMMARY_FILE).exists()


# ------------------------------------------------------------------------------------------------
# sampler steps beyond any sane bound
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "extra, message",
    [
        (["--steps", "1000000000"], "--steps: got 1000000000; pass an integer >= 1 and <= 100000"),
        (["--steps", "8"], "steps=8 is more than gen_length=4"),
    ],
)
def test_too_many_steps_stop_before_the_model(
    llada_folder, gsm8k_file, tmp_path, capsys, no_model_loading, extra, message
):
    line = _stopped(cli.gsm8k_main, _args(llada_folder, gsm8k_file, tmp_path, *extra), capsys)
    assert message in line
