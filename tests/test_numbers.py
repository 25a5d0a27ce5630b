"""utils/numbers.checked_number: the one-line refusal every number setting shares."""

import pytest

from fer_keras.utils.numbers import checked_number


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan"), float("inf"), "x", None, True])
def test_refuses_what_is_not_a_finite_number_in_range(value):
    with pytest.raises(ValueError) as caught:
        checked_number(value, "p", "a probability", low=0, high=1, hint="None for none")
    assert str(caught.value) == (f"p must be a probability in [0, 1]; None for none. "
                                 f"Received: p={value!r}")


@pytest.mark.parametrize("value, expected", [(0, 0.0), ("0.5", 0.5), (1, 1.0)])
def test_returns_a_float(value, expected):
    assert checked_number(value, "p", "a probability", low=0, high=1) == expected


def test_open_ends_are_named_and_kept():
    with pytest.raises(ValueError, match=r"rate must be a step size > 0\. Received: rate=0"):
        checked_number(0, "rate", "a step size", low=0, low_open=True)
