"""panderm.validation: each check accepts what it should (and returns it in the promised form) and refuses the
rest with exactly the one-line message the tasks have always printed."""

import re

import numpy as np
import pytest

from panderm.errors import DataError
from panderm.validation import (
    as_matrix,
    binary_labels_and_scores,
    check_int,
    check_probability_rows,
    encode_labels,
)


def refused(fn, *args, message, **kwargs):
    with pytest.raises(DataError, match="^" + re.escape(message) + "$") as info:
        fn(*args, **kwargs)
    return info.value


# --------------------------------------------------------------------------------------------------------
# as_matrix
# --------------------------------------------------------------------------------------------------------


def test_as_matrix_accepts_numbers_and_returns_contiguous_float32():
    out = as_matrix(np.arange(6, dtype=np.int64).reshape(3, 2)[:, ::-1])
    assert out.dtype == np.float32 and out.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(out, [[1, 0], [3, 2], [5, 4]])
    assert as_matrix([[0.5, 1.5]], "codes", n_cols=2).shape == (1, 2)


def test_as_matrix_reads_a_torch_tensor():
    torch = pytest.importorskip("torch")
    t = torch.ones(2, 3, requires_grad=True)
    np.testing.assert_array_equal(as_matrix(t), np.ones((2, 3), np.float32))


@pytest.mark.parametrize("value, kwargs, message", [
    (np.array(["a", "b"]).reshape(1, 2), {}, "X must hold numbers, got dtype <U1"),
    (np.zeros(3), {"name": "codes"}, "codes must be a 2-D array [N, D], got shape (3,)"),
    (np.zeros((0, 4)), {}, "X is empty (shape (0, 4))"),
    (np.zeros((2, 3)), {"n_cols": 4, "what": "columns (the SAE's d_in)"},
     "X has shape (2, 3) but 4 columns (the SAE's d_in) are expected"),
    (np.array([[1.0, np.nan], [np.inf, 0.0]]), {"name": "features"},
     "features has 2 non-finite values (first at row 0, column 1)"),
])
def test_as_matrix_refusals(value, kwargs, message):
    refused(as_matrix, value, message=message, **kwargs)


def test_as_matrix_ragged_input_is_one_line():
    with pytest.raises(DataError, match=r"^X is not a numeric array: ") as info:
        as_matrix([[1, 2], [3]])
    assert "\n" not in str(info.value)


def test_old_concepts_import_path_is_the_same_function():
    from panderm.tasks.concepts._validate import as_matrix as old

    assert old is as_matrix


# --------------------------------------------------------------------------------------------------------
# encode_labels
# --------------------------------------------------------------------------------------------------------


def test_encode_labels_sorts_classes_and_codes_them():
    codes, classes = encode_labels(np.array(["mel", "nev", "mel", "bcc"]), 4)
    assert classes == ["bcc", "mel", "nev"] and all(isinstance(c, str) for c in classes)
    np.testing.assert_array_equal(codes, [1, 2, 1, 0])
    assert codes.dtype == np.int64
    codes, classes = encode_labels([3, 1, 3], 3)
    assert classes == [1, 3] and type(classes[0]) is int
    np.testing.assert_array_equal(codes, [1, 0, 1])


@pytest.mark.parametrize("labels, n, message", [
    (np.zeros((2, 2)), 4, "labels must be 1-D, got shape (2, 2)"),
    ([0, 1, 1], 4, "labels has 3 entries but features has 4 rows"),
    (np.array([0.0, np.nan, 1.0, np.nan]), 4, "labels has 2 missing values (first at row 1)"),
    (np.array([1, "a"], dtype=object), 2, "labels mix types that cannot be compared (e.g. numbers and strings)"),
    (["x", "x"], 2, "labels hold a single class (np.str_('x')); a classifier needs at least 2"),
])
def test_encode_labels_refusals(labels, n, message):
    refused(encode_labels, labels, n, message=message)


# --------------------------------------------------------------------------------------------------------
# check_int
# --------------------------------------------------------------------------------------------------------


def test_check_int_accepts_whole_numbers_at_or_above_the_minimum():
    assert check_int(0, "n_resamples", 0) == 0
    value = check_int(np.int64(7), "k")
    assert value == 7 and type(value) is int


@pytest.mark.parametrize("value, minimum, message", [
    (0, 1, "top_n must be an integer >= 1, got 0"),
    (True, 0, "top_n must be an integer >= 0, got True"),
    (2.0, 1, "top_n must be an integer >= 1, got 2.0"),
    ("3", 1, "top_n must be an integer >= 1, got '3'"),
])
def test_check_int_refusals(value, minimum, message):
    err = refused(check_int, value, "top_n", minimum, message=message)
    assert err.param is None


def test_check_int_carries_the_param_for_the_door():
    err = refused(check_int, -1, "min_group", 1, param="min_group", message="min_group must be an integer >= 1, got -1")
    assert err.param == "min_group"
    assert err.render({"min_group": "--min-group"}).endswith("(set it with --min-group)")


# --------------------------------------------------------------------------------------------------------
# check_probability_rows
# --------------------------------------------------------------------------------------------------------


def test_probability_rows_within_tolerance_pass_unchanged():
    p = np.array([[0.2, 0.8], [0.5, 0.5 + 5e-4]])
    assert check_probability_rows(p) is p


def test_probability_rows_refusals():
    refused(check_probability_rows, np.array([[0.5, 0.5], [1.1, -0.1]]), "val: ",
            message="val: probs has a negative probability -0.1 at row 1, column 1")
    refused(check_probability_rows, np.array([[0.5, 0.5], [0.7, 0.7]]),
            message="probs row 1 sums to 1.4, not 1 (calibration needs probabilities, e.g. a softmax, not logits "
                    "or per-class scores)")


# --------------------------------------------------------------------------------------------------------
# binary_labels_and_scores
# --------------------------------------------------------------------------------------------------------


def test_binary_labels_and_scores_accepts_bool_and_01():
    pos, a, b = binary_labels_and_scores([0, 1, 1], [0.1, 0.9, 0.8], [1, 0, 0])
    np.testing.assert_array_equal(pos, [False, True, True])
    assert a.dtype == b.dtype == np.float64
    pos, _, _ = binary_labels_and_scores(np.array([True, False]), [0.3, 0.2], [0.1, 0.4])
    np.testing.assert_array_equal(pos, [True, False])


@pytest.mark.parametrize("y, a, b, message", [
    ([0, 1], [0.1, 0.2, 0.3], [0.1, 0.2],
     "DeLong needs 1-D labels and two 1-D score vectors of the same length, got shapes (2,), (3,), (2,)"),
    ([0, 2, 1], [0.1, 0.2, 0.3], [0.1, 0.2, 0.3], "DeLong needs binary labels 0/1, got values [0, 1, 2]"),
    ([0, 1, 1], [0.1, 0.2, 0.3], [0.1, np.nan, 0.3], "scores_b holds a non-finite score at position 1"),
])
def test_binary_labels_and_scores_refusals(y, a, b, message):
    refused(binary_labels_and_scores, y, a, b, message=message)
