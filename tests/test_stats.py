import doctest
import math
from fractions import Fraction

import numpy as np
import pytest

from fer_keras.utils import stats
from fer_keras.utils.stats import bootstrap_interval, mcnemar, wilson_interval


def test_docstring_examples_hold():
    result = doctest.testmod(stats)
    assert result.attempted > 5 and result.failed == 0


def test_wilson_matches_known_values():
    assert wilson_interval(50, 100) == pytest.approx((0.4038, 0.5962), abs=5e-5)
    # 0.95 by hand: z = 1.959964, centre (p + z^2/2n) / (1 + z^2/n), half-width
    # z sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2/n), for 2512 of 3589.
    z, p, n = 1.959964, 2512 / 3589, 3589
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert wilson_interval(2512, 3589) == pytest.approx((centre - half, centre + half),
                                                        abs=1e-6)


def test_wilson_bounds_and_widths():
    low, high = wilson_interval(0, 20)
    assert low == 0.0 and 0 < high < 0.2
    low, high = wilson_interval(20, 20)
    assert high == 1.0 and 0.8 < low < 1
    narrow, wide = wilson_interval(70, 100, 0.9), wilson_interval(70, 100, 0.99)
    assert wide[0] < narrow[0] < 0.7 < narrow[1] < wide[1]
    small, large = wilson_interval(7, 10), wilson_interval(700, 1000)
    assert large[1] - large[0] < small[1] - small[0]
    assert wilson_interval(np.int64(5), np.int64(10)) == wilson_interval(5, 10)


@pytest.mark.parametrize("correct, total, confidence, words", [
    (1, 0, 0.95, "total=0"),
    (1, -3, 0.95, "total=-3"),
    (-1, 10, 0.95, "correct=-1"),
    (11, 10, 0.95, "correct=11, total=10"),
    (5, 10, 0.0, "confidence=0.0"),
    (5, 10, 1, "confidence=1"),
    (5, 10, 95, "confidence=95"),
    (5, 10, float("nan"), "confidence=nan"),
    (5.5, 10, 0.95, "correct=5.5"),
    (True, 10, 0.95, "correct=True"),
])
def test_wilson_refuses_bad_input_in_one_line(correct, total, confidence, words):
    with pytest.raises(ValueError) as raised:
        wilson_interval(correct, total, confidence)
    message = str(raised.value)
    assert words in message and "\n" not in message


def test_bootstrap_is_reproducible_and_close_to_wilson():
    rng = np.random.default_rng(3)
    correct = rng.random(2000) < 0.65
    first = bootstrap_interval(correct, seed=7)
    assert bootstrap_interval(correct, seed=7) == first
    assert bootstrap_interval(correct, seed=8) != first
    wilson = wilson_interval(int(correct.sum()), len(correct))
    assert first[0] < correct.mean() < first[1]
    assert first == pytest.approx(wilson, abs=0.005)
    assert bootstrap_interval([1, 1, 1, 1]) == (1.0, 1.0)
    # More resamples than one chunk holds: the chunks must fill every row.
    many = bootstrap_interval(np.arange(3000) % 2, resamples=700)
    assert 0.47 < many[0] < 0.5 < many[1] < 0.53


@pytest.mark.parametrize("values, kwargs, words", [
    ([], {}, "shape (0,)"),
    ([[1, 0], [0, 1]], {}, "shape (2, 2)"),
    ([1, float("nan")], {}, "1 NaN or infinite"),
    (["a", "b"], {}, "dtype <U1"),
    ([1, 0], {"resamples": 0}, "resamples=0"),
    ([1, 0], {"confidence": 1.5}, "confidence=1.5"),
])
def test_bootstrap_refuses_bad_input(values, kwargs, words):
    with pytest.raises(ValueError) as raised:
        bootstrap_interval(values, **kwargs)
    assert words in str(raised.value)


def _pairs(n01, n10, both=5, neither=3):
    """Correctness of models a and b with the given discordant counts."""
    a = [0] * n01 + [1] * n10 + [1] * both + [0] * neither
    b = [1] * n01 + [0] * n10 + [1] * both + [0] * neither
    return np.array(a), np.array(b)


def test_mcnemar_exact_p_values_by_hand():
    # 1 and 5 discordant faces: P(X <= 1 | n=6, p=1/2) = (1 + 6) / 64, doubled.
    assert mcnemar(*_pairs(1, 5)) == {"n01": 1, "n10": 5, "p_value": 14 / 64, "better": "a"}
    # 6 and 0: 2 / 64; b is now the one right on the discordant faces.
    assert mcnemar(*_pairs(6, 0)) == {"n01": 6, "n10": 0, "p_value": 2 / 64, "better": "b"}
    # A tie doubles a tail of more than 1/2: capped at 1.
    assert mcnemar(*_pairs(3, 3)) == {"n01": 3, "n10": 3, "p_value": 1.0, "better": None}
    assert mcnemar(*_pairs(0, 0)) == {"n01": 0, "n10": 0, "p_value": 1.0, "better": None}
    a, b = _pairs(2, 9)
    assert mcnemar(a.astype(bool), b.astype(bool)) == mcnemar(a, b)
    swapped = mcnemar(b, a)
    assert (swapped["n01"], swapped["n10"], swapped["better"]) == (9, 2, "b")
    assert swapped["p_value"] == mcnemar(a, b)["p_value"]


def test_mcnemar_stays_exact_on_thousands_of_discordant_faces():
    n01, n10 = 1000, 1400
    exact = 2 * Fraction(sum(math.comb(2400, k) for k in range(n01 + 1)), 2 ** 2400)
    result = mcnemar(*_pairs(n01, n10))
    assert result["p_value"] == float(exact)
    assert 0 < result["p_value"] < 1e-12
    # The continuity-corrected chi-square approximation agrees to the order of magnitude.
    chi_square = (abs(n01 - n10) - 1) ** 2 / (n01 + n10)
    assert result["p_value"] == pytest.approx(math.erfc(math.sqrt(chi_square / 2)), rel=0.5)


def test_mcnemar_refuses_mismatched_or_wrong_arrays():
    with pytest.raises(ValueError) as raised:
        mcnemar([1, 0, 1], [1, 0])
    message = str(raised.value)
    assert "len(correct_a)=3" in message and "len(correct_b)=2" in message
    assert "\n" not in message
    with pytest.raises(ValueError, match=r"correct_b with values \[0, 3, 6\]"):
        mcnemar([1, 0, 1], [3, 0, 6])  # class ids instead of correctness
    with pytest.raises(ValueError, match=r"shape \(2, 2\)"):
        mcnemar([[1, 0], [0, 1]], [1, 0])
    with pytest.raises(ValueError, match="empty"):
        mcnemar([], [])
