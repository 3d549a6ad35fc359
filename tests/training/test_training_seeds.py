"""The seeds of a run stay what they were: the noise, data order, dropout and infill spans of a resumed or
repeated run depend on them. Values pinned from the code before the seeds were derived in one place."""

import pytest

from flexretrofit.data import FlexMDMCollator, MDMCollator
from flexretrofit.data.formats import CodeInfillFormat
from flexretrofit.testing import build_tiny_tokenizer
from flexretrofit.utils import derive_seed

SAMPLES = [
    {"input_ids": list(range(5, 17)), "prompt_mask": [True] * 3 + [False] * 9},
    {"input_ids": list(range(20, 28))},
]
FIB = "def fib(n):\n    if n < 2:\n        return n\n\n    return fib(n - 1) + fib(n - 2)\n"


def test_noise_and_stream_seeds_are_unchanged():
    # The collator's time and noise generators and the stream's shuffle windows: derive_seed(*ints).
    assert derive_seed(0, 0) == 869982173022612747
    assert derive_seed(7, 3) == 8197533589338942744
    assert derive_seed(0, 5, 1, 1) == 7328624433777137575
    assert derive_seed(123, 4, 0, 1) == 2513734317592992889


def test_dropout_seeds_are_unchanged():
    # The trainer seeds dropout per (seed, step, slot of the global batch).
    assert derive_seed("dropout", 0, 0, 0) == 7119130115206021360
    assert derive_seed("dropout", 42, 7, 3) == 7264918907046388413


def test_infill_span_seeds_are_unchanged():
    # An infilling sample's middle span depends only on the seed and the sample's text (64 bits).
    nul = "\x00"
    assert (
        derive_seed(0, "Write f", "def f():\n    return 1\n", bits=64, separator=nul) == 12917654110717391750
    )
    assert derive_seed(17, "a", "b", bits=64, separator=nul) == 13979875457583725705
    assert derive_seed(3, bits=64, separator=nul) == 112266347804173726


def test_collators_draw_the_same_noise_as_before():
    mdm = MDMCollator(0, 3, rank=1, world_size=2, seed=5)(SAMPLES, step=4)
    assert mdm["t"].tolist() == pytest.approx([0.503225, 0.752975], abs=1e-6)
    assert mdm["logits_positions"].int().tolist() == [
        [0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 1],
        [0, 1, 1, 1, 0, 1, 1, 0, 0, 0, 0, 0],
    ]
    flex = FlexMDMCollator(0, 3, "linear", "linear", rank=1, world_size=2, seed=5)(SAMPLES, step=4)
    assert flex["t"].tolist() == pytest.approx([0.503225, 0.752975], abs=1e-6)
    assert flex["xt"].tolist() == [[5, 6, 7, 3, 11, 12, 3, 16], [3, 3, 23, 3, 3, 3, 0, 0]]


def test_infill_spans_are_the_same_as_before():
    tokenizer = build_tiny_tokenizer()
    assert CodeInfillFormat(tokenizer, seed=0).split_code("Write fib", FIB) == (
        "def fib(n):\n    if n < 2:\n",
        "        return n\n\n",
        "    return fib(n - 1) + fib(n - 2)\n",
    )
    assert CodeInfillFormat(tokenizer, seed=3, span_unit="chars").split_code("Write fib", FIB) == (
        "def fib(n):\n    if n < 2:\n ",
        "       return n\n\n    return fib(n - 1) + fib",
        "(n - 2)\n",
    )
