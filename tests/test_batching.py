from __future__ import annotations

import numpy as np
import pytest

from embedder.jina.batching import TokenEstimator, plan_batches


@pytest.mark.parametrize(
    ("counts", "max_inputs", "max_tokens", "expected"),
    [
        ([1] * 5, 2, 100, [(0, 2), (2, 4), (4, 5)]),
        ([10, 10, 10], 10, 20, [(0, 2), (2, 3)]),
        ([50, 1, 1], 10, 20, [(0, 1), (1, 3)]),  # an item over the budget travels alone
        ([], 10, 10, []),
        ([5] * 4096, 2048, 10**9, [(0, 2048), (2048, 4096)]),
    ],
)
def test_plan_batches_packs_contiguous_ranges(counts, max_inputs, max_tokens, expected):
    assert plan_batches(counts, max_inputs, max_tokens) == expected


def test_plan_batches_covers_every_item_once_within_limits():
    rng = np.random.default_rng(7)
    counts = rng.integers(1, 400, size=3000)
    ranges = plan_batches(counts, 100, 5000)
    covered = [i for start, end in ranges for i in range(start, end)]
    assert covered == list(range(3000))
    for start, end in ranges:
        assert end - start <= 100
        assert counts[start:end].sum() <= 5000 or end - start == 1


def test_estimator_calibrates_toward_billed_tokens():
    estimator = TokenEstimator(chars_per_token=3.0, overhead=2)
    assert estimator.estimate_lengths(np.array([300]))[0] == 102
    estimator.observe(chars=4000, inputs=10, billed_tokens=1020)  # 4 chars per content token
    assert estimator.chars_per_token == pytest.approx(4.0)
    estimator.observe(chars=5000, inputs=10, billed_tokens=1020)  # 5 chars per token, smoothed
    assert 4.0 < estimator.chars_per_token < 5.0
    assert list(estimator.estimate_lengths(np.array([0, 40]))) == [2, 2 + int(np.ceil(40 / estimator.chars_per_token))]
