import gzip
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "fer2013.csv.gz"

# The slow lane, chosen here and nowhere else. The fast lane, `python -m pytest -m "not
# slow"`, is the one to run while working: under ~90 s on an idle 2-core machine, against ~7
# minutes for the whole suite (`python -m pytest`, which CI runs). It leaves out
#   - every test that uses the real FER2013 (the `real_data` fixture, marked `real_data`
#     too): decoding its 35,887 rows alone takes seconds, and most then train on them;
#   - the tests listed in SLOW_TESTS. MEASURED: each took 2 s or more (setup + call) in a
#     `--durations=0` run of the fast-lane candidates on this machine, shared (it ran at
#     about 64% of one core's worth of CPU per second of wall time). Most train for real
#     (fit's run-folder guards on finished runs, a train step of the larger models) or run
#     OpenCV on videos. The train step of `baseline` (2.0 s) stays in the fast lane as its
#     one train step. KINDS: files and tests of a kind that takes seconds each, not timed one
#     by one: TFLite conversion and SavedModel export, other Keras backends and workers in
#     subprocesses, Python subprocesses that import TensorFlow, full fits and benchmarks.
# A new test that takes seconds belongs here. Entries are test ids (`file::name`,
# parameters in brackets); a trailing `*` matches every id that starts so.
SLOW_TESTS = (
    # MEASURED
    "tests/test_accuracy.py::test_ensemble_command_writes_a_run_folder_and_refuses_to_overwrite",
    "tests/test_accuracy.py::test_ensemble_of_two_equals_the_mean_of_their_probabilities",
    "tests/test_accuracy.py::test_ensemble_select_keeps_the_best_subset_on_the_selection_split",
    "tests/test_accuracy.py::test_rebalance_command_writes_a_run_folder_that_scores_as_recorded",
    "tests/test_accuracy.py::test_tta_output_writes_a_run_folder_with_its_views",
    "tests/test_accuracy.py::test_view_sets_average_every_view_and_count_passes",
    "tests/test_bench.py::test_rounds_take_turns_and_keep_each_precisions_median",
    "tests/test_calibration.py::test_calibrate_command_writes_a_run_folder_that_verifies",
    "tests/test_data.py::test_augmentation_eager_and_in_dataset_map[study]",
    "tests/test_detectors.py::test_command_compares_both_detectors_on_the_shared_photos",
    "tests/test_detectors.py::test_command_measures_haar_on_the_shared_photos",
    "tests/test_detectors.py::"
    "test_haar_boxes_a_pixel_off_square_are_kept_as_the_cascade_gives_them",
    "tests/test_detectors.py::"
    "test_haar_gives_the_records_of_the_default_call_with_the_cascades_boxes",
    "tests/test_detectors.py::test_haar_wrapper_gives_the_boxes_of_faces_py_on_real_photos",
    "tests/test_detectors.py::"
    "test_mtcnn_finds_faces_in_rgb_and_gray_and_none_in_a_blank_picture",
    "tests/test_finetune.py::test_fine_tuning_beats_zero_shot_and_serves_its_classes",
    "tests/test_finetune.py::test_folds_write_the_documented_block",
    "tests/test_fit.py::test_evaluate_no_mirror_scores_the_wrapped_network_alone",
    "tests/test_fit_guards.py::test_a_stale_staging_folder_without_a_finished_epoch_is_cleaned",
    "tests/test_fit_guards.py::test_a_user_folder_named_like_a_retired_run_is_not_removed",
    "tests/test_fit_guards.py::test_overwrite_replaces_run_files_the_user_named",
    "tests/test_fit_safety.py::test_a_bad_flag_leaves_a_finished_run_untouched",
    "tests/test_fit_safety.py::"
    "test_a_crash_between_the_two_renames_of_a_swap_restores_the_old_run",
    "tests/test_fit_safety.py::test_a_crash_mid_run_leaves_the_previous_run_intact_and_resumes",
    "tests/test_fit_safety.py::test_a_kill_after_training_resumes_without_training_again",
    "tests/test_fit_safety.py::test_a_nan_validation_loss_stops_before_the_epoch_is_checkpointed",
    "tests/test_fit_safety.py::test_a_second_fit_on_a_locked_run_folder_exits_2",
    "tests/test_fit_safety.py::"
    "test_an_unfinished_run_inside_the_run_folder_moves_to_staging_and_resumes",
    "tests/test_fit_safety.py::test_fit_prints_progress_within_an_epoch_when_not_on_a_terminal",
    "tests/test_fit_safety.py::test_fit_refuses_a_finished_run_and_leaves_it_byte_identical",
    "tests/test_fit_safety.py::test_overwrite_replaces_a_finished_run",
    "tests/test_fit_safety.py::test_resuming_on_other_data_is_refused_naming_both",
    "tests/test_layers.py::test_training_step_updates_the_localisation_network",
    "tests/test_model_safety.py::test_logits_savedmodel_and_tflite_are_refused",
    "tests/test_models.py::test_keras_save_and_reload[alexnet]",
    "tests/test_models.py::test_keras_save_and_reload[deep_emotion_wide]",
    "tests/test_models.py::test_keras_save_and_reload[fer_resnet]",
    "tests/test_models.py::test_keras_save_and_reload[fer_vgg]",
    "tests/test_models.py::test_mirror_average_averages_face_and_mirror_at_inference_only",
    "tests/test_models.py::test_train_step_changes_weights[alexnet]",
    "tests/test_models.py::test_train_step_changes_weights[baseline_deep]",
    "tests/test_models.py::test_train_step_changes_weights[deep_emotion]",
    "tests/test_models.py::test_train_step_changes_weights[deep_emotion_wide]",
    "tests/test_models.py::test_train_step_changes_weights[deepest]",
    "tests/test_models.py::test_train_step_changes_weights[dexpression]",
    "tests/test_models.py::test_train_step_changes_weights[dexpression_wide]",
    "tests/test_models.py::test_train_step_changes_weights[fer_resnet]",
    "tests/test_models.py::test_train_step_changes_weights[fer_vgg]",
    "tests/test_models.py::test_train_step_changes_weights[lenet5]",
    "tests/test_models.py::test_train_step_check_names_a_weight_that_did_not_move",
    "tests/test_tune.py::test_chief_and_two_workers_on_loopback_run_every_trial_once",
    "tests/test_tune.py::test_compare_keeps_a_finished_untuned_run_unless_overwrite",
    "tests/test_tune.py::"
    "test_default_hyperparameters_build_the_experiment_as_fit_does[fer_resnet_kaggle]",
    "tests/test_tune.py::test_fit_forwards_the_tuners_callbacks_and_fails_diverged_trials",
    "tests/test_tune.py::test_killed_search_continues_without_repeating_trials",
    "tests/test_tune.py::test_search_finishes_writes_results_and_rerun_repeats_nothing",
    "tests/test_video.py::test_csv_annotated_video_and_timeline",
    "tests/test_video.py::test_every_nth_frame_with_times_tracks_and_boxes",
    "tests/test_video.py::test_fps_sampling_picks_frames_by_video_time",
    "tests/test_video.py::test_followed_faces_match_whole_frame_searches",
    "tests/test_video.py::test_a_face_lost_in_its_window_is_dropped_then_found_again",
    "tests/test_run_labels.py::test_a_subset_run_exports_its_names",
    # KINDS
    "tests/test_backends.py::*",
    "tests/test_bench.py::test_bench_measures_one_experiment_through_fits_pipeline",
    "tests/test_bench.py::test_model_only_times_the_network_without_augmentation",
    "tests/test_bench.py::test_serving_only_times_the_export_without_training",
    "tests/test_calibration.py::test_savedmodel_and_tflite_serve_the_calibrated_probabilities",
    "tests/test_data_safety.py::test_sparse_file_without_newline_is_refused_quickly",
    "tests/test_export.py::*",
    "tests/test_export_safety.py::test_remove_stale_partials_keeps_running_exports",
    "tests/test_export_safety.py::test_stale_partial_folders_of_killed_exports_are_removed",
    "tests/test_fit.py::test_cli_ends_a_diverged_run_with_status_1",
    "tests/test_fit.py::test_fit_writes_every_output_and_evaluate_reads_it",
    "tests/test_fit.py::test_killed_run_resumes_from_last_finished_epoch",
    "tests/test_fit.py::test_nan_loss_stops_with_a_clear_message",
    "tests/test_fit.py::test_resume_refuses_different_settings",
    "tests/test_fit_guards.py::test_help_names_the_console_script_and_does_not_import_keras",
    "tests/test_fit_guards.py::test_tensorflow_start_up_logs_are_quiet_unless_asked_for*",
    "tests/test_fit_safety.py::test_the_lock_is_released_when_its_holder_is_killed",
    "tests/test_ferplus.py::test_an_eight_class_run_round_trips_through_evaluate_export_and_"
    "predict",
    "tests/test_distill.py::test_a_distilled_run_records_its_teachers_and_trains",
    "tests/test_calibration.py::test_fit_calibrate_writes_the_calibrated_run_beside_it",
    "tests/test_video.py::test_the_real_video_is_one_person_in_its_episodes",
    "tests/test_litert.py::*",
    "tests/test_packaging.py::test_the_installed_wheel_predicts_from_an_empty_folder",
    "tests/test_packaging.py::test_the_wheel_holds_the_packaged_model_and_stays_small",
)


def _is_listed_slow(nodeid):
    return any(nodeid == entry or (entry.endswith("*") and nodeid.startswith(entry[:-1]))
               for entry in SLOW_TESTS)


def pytest_collection_modifyitems(config, items):
    """Marks `real_data` on the tests using that fixture, and `slow` (see SLOW_TESTS)."""
    for item in items:
        uses_real_data = "real_data" in getattr(item, "fixturenames", ())
        if uses_real_data:
            item.add_marker(pytest.mark.real_data)
        if uses_real_data or _is_listed_slow(item.nodeid):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def seed():
    """Every test starts from the same Python, NumPy and backend seeds."""
    import keras

    keras.utils.set_random_seed(1234)
    return 1234


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Decoded-CSV caches of tiny test files go to the test's own folder."""
    if "FER_KERAS_TEST_SHARED_CACHE" not in os.environ:
        monkeypatch.setenv("FER_KERAS_CACHE", str(tmp_path / "cache"))


def write_csv(path, rows, header="emotion,pixels,Usage", compress=False):
    """Writes Kaggle-format rows `(label, pixels_string, usage)` to `path`."""
    text = header + "\n" + "".join(f"{label},{pixels},{usage}\n" for label, pixels, usage in rows)
    if compress:
        with gzip.open(path, "wt") as handle:
            handle.write(text)
    else:
        path.write_text(text)
    return path


def random_rows(count, seed=0, usages=("Training",)):
    """Random-pixel rows in the Kaggle format: every class present, cycling usages."""
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(count):
        pixels = " ".join(map(str, rng.integers(0, 256, 48 * 48)))
        rows.append((index % 7, pixels, usages[index % len(usages)]))
    return rows


def write_faces(root, folders, picture, subjects=3, per_subject=2, seed=0):
    """A class-folder data set: `root/FOLDER/sNN_K.png` (subject NN, take K) for each
    `(folder, kind)` in `folders`, each image `picture(kind, rng)` (a uint8 array)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for folder, kind in folders:
        (root / folder).mkdir(parents=True)
        for subject in range(subjects):
            for take in range(per_subject):
                Image.fromarray(picture(kind, rng)).save(
                    root / folder / f"s{subject:02d}_{take}.png")
    return root


@pytest.fixture
def tiny_csv(tmp_path):
    """A 140-row synthetic FER2013 CSV with all three usages."""
    rows = random_rows(84, seed=1) + random_rows(28, seed=2, usages=("PublicTest",)) + \
        random_rows(28, seed=3, usages=("PrivateTest",))
    return write_csv(tmp_path / "fer2013.csv", rows)


@pytest.fixture
def real_data():
    """The shared FER2013 file (FER2013_PATH or ../shared/data); skips when absent."""
    path = Path(os.environ.get("FER2013_PATH", SHARED_DATA))
    if not path.exists():
        pytest.skip(f"real FER2013 not found at {path}; set FER2013_PATH to run this test")
    return path
