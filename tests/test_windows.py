"""Late chunking: windows of one document's chunks, and the one window each chunk's vector comes from."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from embedder.jina.windows import choose_windows, plan_document, plan_windows


@pytest.mark.parametrize(
    ("tokens", "budget", "overlap", "max_inputs", "expected"),
    [
        ([100] * 5, 1000, 2, 100, [(0, 5)]),  # a document that fits travels whole
        ([100] * 10, 350, 0, 100, [(0, 3), (3, 6), (6, 9), (9, 10)]),
        ([100] * 10, 350, 1, 100, [(0, 3), (2, 5), (4, 7), (6, 9), (8, 10)]),
        ([500, 100, 100], 350, 2, 100, [(0, 1), (1, 3)]),  # a chunk over the budget gets a window of its own
        ([1] * 7, 1000, 1, 3, [(0, 3), (2, 5), (4, 7)]),  # the API's inputs per request bound a window too
        ([], 100, 2, 100, []),
    ],
)
def test_plan_windows(tokens, budget, overlap, max_inputs, expected):
    assert plan_windows(tokens, budget, overlap, max_inputs) == expected


def test_windows_cover_every_chunk_in_order_within_the_budget():
    rng = np.random.default_rng(3)
    for _ in range(200):
        tokens = rng.integers(1, 600, size=int(rng.integers(1, 60))).tolist()
        budget, overlap = int(rng.integers(600, 3000)), int(rng.integers(0, 4))
        windows = plan_windows(tokens, budget, overlap, 2048)
        assert windows[0][0] == 0 and windows[-1][1] == len(tokens)
        for (start, end), (next_start, next_end) in itertools.pairwise(windows):
            assert start < next_start <= end < next_end  # consecutive, overlapping by at most `overlap`
            assert end - next_start <= overlap
        for start, end in windows:
            assert sum(tokens[start:end]) <= budget or end - start == 1


def test_each_chunk_takes_the_window_where_it_has_the_most_context():
    windows = [(0, 5), (3, 8)]
    # chunks 3 and 4 are in both: 3 is 1 from window 0's end and 0 from window 1's start -> window 0;
    # 4 is at window 0's end (0) and 1 into window 1 -> window 1
    assert choose_windows(8, windows) == [0, 0, 0, 0, 1, 1, 1, 1]
    assert choose_windows(3, [(0, 3)]) == [0, 0, 0]


def test_plan_document_flattens_windows_and_picks_positions():
    plan = plan_document([400] * 10, chars_per_token=4, budget=350, overlap=2, max_inputs=100, offset=5)
    assert plan.groups[0] == (5, 8) and all(end - start == 3 for start, end in plan.groups)
    assert len(plan.order) == plan.groups[-1][1] - 5
    for chunk, position in enumerate(plan.picks):  # each chunk takes a position that holds it
        assert plan.order[position - 5] == chunk
    # the same lengths give the same plan: a chunk's window depends on its document alone
    assert plan_document([400] * 10, chars_per_token=4, budget=350, overlap=2, max_inputs=100, offset=5) == plan
