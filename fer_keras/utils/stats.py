"""Honest error bars for accuracy figures: the Wilson interval, a percentile bootstrap and
the exact McNemar test for two models scored on the same faces.

NumPy and the standard library only. An accuracy measured on FER2013's 3,589 PrivateTest
faces is a proportion with a standard error of about 0.8 points, so a difference of a
point between two models is not a result until a paired test says so.

>>> low, high = wilson_interval(2512, 3589)
>>> f"{low:.4f} {high:.4f}"
'0.6847 0.7147'
>>> mcnemar([1, 1, 1, 0], [0, 0, 1, 0])
{'n01': 0, 'n10': 2, 'p_value': 0.5, 'better': 'a'}
"""

import math
import operator
import statistics
from fractions import Fraction

import numpy as np

_BOOTSTRAP_CHUNK = 1 << 20
"""At most this many resampled items are drawn at once, so a large bootstrap stays small in
memory."""


def _check_confidence(confidence):
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float, np.number)) \
            or not 0 < confidence < 1:
        raise ValueError(f"confidence must be a number strictly between 0 and 1, e.g. 0.95. "
                         f"Received: confidence={confidence!r}")
    return float(confidence)


def _z_value(confidence):
    """The two-sided standard normal quantile for `confidence` (1.959964 for 0.95)."""
    return statistics.NormalDist().inv_cdf(1 - (1 - confidence) / 2)


def _count(value, name):
    """`value` as a Python int; a float, bool or string is refused naming `name`."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer count, not a bool. Received: "
                         f"{name}={value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer count (e.g. the number of faces). "
                         f"Received: {name}={value!r}") from None


def wilson_interval(correct: int, total: int, confidence: float = 0.95
                    ) -> "tuple[float, float]":
    """The Wilson score interval of a proportion `correct / total`.

    Unlike the normal approximation `p +- z * sqrt(p (1 - p) / n)`, it stays inside [0, 1]
    and keeps close to its nominal coverage for small counts and proportions near 0 or 1
    (Wilson 1927; Brown, Cai and DasGupta 2001, "Interval Estimation for a Binomial
    Proportion").

    Args:
        correct: the number of successes (faces classified correctly), in [0, total].
        total: the number of trials (faces scored), at least 1.
        confidence: the two-sided coverage, strictly between 0 and 1.

    Returns:
        `(low, high)`, floats in [0, 1].

    Raises:
        ValueError: for `total <= 0`, `correct` outside [0, total] or a `confidence`
            outside (0, 1).

    Example:

    >>> [round(bound, 4) for bound in wilson_interval(50, 100)]
    [0.4038, 0.5962]
    >>> [round(bound, 4) for bound in wilson_interval(0, 10, confidence=0.9)]
    [0.0, 0.2129]
    """
    correct, total = _count(correct, "correct"), _count(total, "total")
    confidence = _check_confidence(confidence)
    if total <= 0:
        raise ValueError(f"total must be at least 1 (the number of items scored). "
                         f"Received: total={total}")
    if not 0 <= correct <= total:
        raise ValueError(f"correct must be in [0, total]: a count of the {total} items. "
                         f"Received: correct={correct}, total={total}")
    z = _z_value(confidence)
    proportion = correct / total
    scale = 1 + z * z / total
    centre = (proportion + z * z / (2 * total)) / scale
    half_width = z * math.sqrt(proportion * (1 - proportion) / total
                               + z * z / (4 * total * total)) / scale
    # At 0 or `total` successes the bound is 0 or 1 exactly; rounding would leave 1e-17.
    low = 0.0 if correct == 0 else max(0.0, centre - half_width)
    high = 1.0 if correct == total else min(1.0, centre + half_width)
    return low, high


def _per_item(values, name):
    """`values` as a 1-D float64 array of finite numbers with at least one item."""
    array = np.asarray(values)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array (one value per item). "
                         f"Received: {name} of shape {array.shape}")
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold numbers (e.g. 0/1 correctness per face). "
                         f"Received: {name} of dtype {array.dtype}")
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must hold finite numbers; it has "
                         f"{np.count_nonzero(~np.isfinite(array))} NaN or infinite values.")
    return array


def bootstrap_interval(values_or_correct, confidence: float = 0.95, resamples: int = 2000,
                       seed: int = 0) -> "tuple[float, float]":
    """A percentile bootstrap interval of the mean (Efron and Tibshirani 1993, ch. 13).

    The items are resampled with replacement `resamples` times; the interval is the
    `(1 - confidence) / 2` and `(1 + confidence) / 2` quantiles of the resampled means. For
    0/1 correctness it agrees closely with `wilson_interval` on a few thousand faces; its use
    is a statistic Wilson does not cover, such as the mean of per-face scores.

    Args:
        values_or_correct: one number per item, typically 0/1 (or bool) correctness per
            face.
        confidence: the two-sided coverage, strictly between 0 and 1.
        resamples: how many bootstrap resamples, at least 1.
        seed: the seed of `numpy.random.default_rng`, so the interval is reproducible.

    Returns:
        `(low, high)`, floats.

    Raises:
        ValueError: for an empty or non-1-D input, non-finite values, a `confidence`
            outside (0, 1) or `resamples < 1`.

    Example:

    >>> correct = [1] * 70 + [0] * 30
    >>> low, high = bootstrap_interval(correct, seed=0)
    >>> bool(0.60 < low < 0.70 < high < 0.80)
    True
    >>> bootstrap_interval(correct, seed=0) == (low, high)
    True
    """
    values = _per_item(values_or_correct, "values_or_correct")
    confidence = _check_confidence(confidence)
    resamples = _count(resamples, "resamples")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1 (2000 is usual). "
                         f"Received: resamples={resamples}")
    rng = np.random.default_rng(seed)
    size = len(values)
    per_chunk = max(1, _BOOTSTRAP_CHUNK // size)
    means = np.empty(resamples)
    for start in range(0, resamples, per_chunk):
        stop = min(resamples, start + per_chunk)
        picks = rng.integers(0, size, size=(stop - start, size))
        means[start:stop] = values[picks].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def _correctness(values, name):
    """`values` as a 1-D bool array; anything but 0/1 (or bool) per item is refused."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of 0/1 correctness, one per face. "
                         f"Received: {name} of shape {array.shape}")
    if array.size and (array.dtype.kind not in "biuf" or not np.isin(array, (0, 1)).all()):
        shown = np.unique(array)[:5].tolist() if array.dtype.kind in "biuf" else array.dtype
        raise ValueError(f"{name} must hold 0/1 (or bool) per face, e.g. "
                         f"`predictions == labels`, not class ids or probabilities. "
                         f"Received: {name} with values {shown}")
    return array.astype(bool)


def _binomial_tail(successes, trials):
    """P(X <= successes) for X ~ Binomial(trials, 1/2), exact as a `Fraction`."""
    # C(n, k + 1) = C(n, k) (n - k) / (k + 1) is exact in integers and, unlike one
    # `math.comb` per term, costs one multiplication per term.
    term = total = 1  # C(trials, 0)
    for k in range(successes):
        term = term * (trials - k) // (k + 1)
        total += term
    return Fraction(total, 1 << trials)


def mcnemar(correct_a, correct_b) -> dict:
    """The exact two-sided McNemar test of two models scored on the same faces.

    Only the discordant faces (one model right, the other wrong) carry information. Under
    the null hypothesis that both models are equally accurate, each of the `n01 + n10`
    discordant faces is equally likely to favour either model, so the p-value is twice the
    smaller binomial tail with p = 1/2, capped at 1 (McNemar 1947; the exact form is
    recommended by Dietterich 1998, "Approximate Statistical Tests for Comparing Supervised
    Classification Learning Algorithms"). It is computed with exact integers, so it neither
    overflows nor loses the small p-values of a few thousand discordant faces.

    Args:
        correct_a: 0/1 (or bool) per face: whether model a classified it correctly.
        correct_b: the same for model b, on the same faces in the same order.

    Returns:
        A dict: `n01`, the faces a got wrong and b right; `n10`, the faces a got right and b
        wrong; `p_value`, a float in (0, 1] (1.0 when no face is discordant); `better`, "a"
        when `n10 > n01`, "b" when `n01 > n10`, None on a tie. `better` is the direction
        only: read it as a difference only when `p_value` is small (e.g. below 0.05).

    Raises:
        ValueError: for arrays of different lengths, not 1-D, empty, or holding values
            other than 0/1.

    Example:

    >>> a = [1] * 10 + [0] * 2 + [1] * 80
    >>> b = [0] * 10 + [1] * 2 + [1] * 80
    >>> result = mcnemar(a, b)
    >>> result["n01"], result["n10"], result["better"], round(result["p_value"], 4)
    (2, 10, 'a', 0.0386)
    >>> mcnemar([1, 0], [1, 0])["p_value"]
    1.0
    """
    a = _correctness(correct_a, "correct_a")
    b = _correctness(correct_b, "correct_b")
    if len(a) != len(b):
        raise ValueError(f"correct_a and correct_b must score the same faces, so their "
                         f"lengths must match. Received: len(correct_a)={len(a)}, "
                         f"len(correct_b)={len(b)}")
    if not len(a):
        raise ValueError("correct_a and correct_b are empty: score the models on at least "
                         "one face.")
    n01 = int(np.count_nonzero(~a & b))
    n10 = int(np.count_nonzero(a & ~b))
    discordant = n01 + n10
    if discordant == 0:
        p_value = 1.0
    else:
        p_value = float(min(Fraction(1), 2 * _binomial_tail(min(n01, n10), discordant)))
    better = "a" if n10 > n01 else "b" if n01 > n10 else None
    return {"n01": n01, "n10": n10, "p_value": p_value, "better": better}
