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
