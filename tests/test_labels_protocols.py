"""Label sets and protocols are data: scoring follows the model's label set, and every
protocol question has one answer."""

import numpy as np
import pytest

from fer_keras.data import labels, protocols
from fer_keras.training.results import score


def test_fer2013_is_the_default_seven():
    assert labels.label_set_for(7) is labels.FER2013
    assert labels.FER2013.class_names[3] == "happy"
    assert labels.label_set_for(8) is labels.FERPLUS


def test_ferplus_classes_map_onto_fer2013s_seven():
    columns = labels.shared_classes(labels.FERPLUS, labels.FER2013)
    assert [labels.FERPLUS.class_names[i] for i in columns] == list(labels.FER2013.class_names)
    with pytest.raises(ValueError, match="contempt"):
        labels.shared_classes(labels.FER2013, labels.FERPLUS)


def test_an_output_count_of_no_label_set_is_one_line():
    with pytest.raises(ValueError, match=r"has 5 outputs, which matches no known label set "
                                         r"\(known: 7 \(fer2013\), 8 \(ferplus\)"):
        labels.label_set_for(5)


def test_scores_name_the_classes_of_the_models_label_set():
    probabilities = np.eye(8)[[0, 7, 7, 3]]
    scored = score([0, 7, 6, 3], probabilities)
    assert scored["class_order"][-1] == "contempt" and len(scored["per_class"]) == 8
    assert np.asarray(scored["confusion_matrix"]).shape == (8, 8)
    assert scored["accuracy"] == 0.75


def test_protocols_answer_which_split_selects():
    assert protocols.get_protocol("kaggle").selection_split == "public_test"
    assert protocols.get_protocol("study").selection_split == "validation"
    assert protocols.protocol_of({}) is protocols.STUDY
    with pytest.raises(ValueError, match="Did you mean 'kaggle'"):
        protocols.get_protocol("kagle")


def test_a_run_of_its_own_classes_is_scored_on_the_ones_it_shares():
    from fer_keras.training.results import align_to_label_set, score_on

    # Outputs happy, sad, bored (a fine-tune with a new class) on FER2013 labels.
    mine = labels.LabelSet("mine", ("happy", "sad", "bored"))
    probabilities = np.array([[0.5, 0.1, 0.4], [0.1, 0.2, 0.7], [0.2, 0.3, 0.5],
                              [0.6, 0.3, 0.1]])
    truth = np.array([3, 4, 0, 4])  # happy, sad, angry, sad
    kept, mapped, columns, subset = align_to_label_set(truth, labels.FER2013,
                                                       probabilities, mine)
    assert subset and list(kept) == [True, True, False, True]
    assert list(mapped[kept]) == [0, 1, 1] and columns.shape == (4, 2)
    scored = score_on(truth, labels.FER2013, probabilities, mine)
    # Argmax among happy and sad only: the second face is sad (0.2 > 0.1), not bored.
    assert scored["class_order"] == ["happy", "sad"] and scored["left_out"] == 1
    assert scored["accuracy"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="share 1 class, and scoring needs 2"):
        score_on(truth, labels.FER2013, probabilities,
                 labels.LabelSet("odd", ("happy", "bored", "sleepy")))
    with pytest.raises(ValueError, match="3 classes but 7 class names"):
        score([0], probabilities[:1], labels.FER2013.class_names)


def test_names_of_a_registered_set_in_its_order_are_that_set():
    assert labels.label_set_named(list(labels.FERPLUS.class_names), "x") is labels.FERPLUS
    reordered = labels.label_set_named(labels.FER2013.class_names[::-1], "reversed")
    assert reordered.name == "reversed" and reordered.class_names[0] == "neutral"
