"""The names an export uses: its signatures, their input and outputs, and the files of a
TF Serving version folder. Everything that writes or reads an export (`export`, `litert`,
the runner) takes them from here, so they are defined once."""

DEFAULT_SIGNATURE = "serving_default"
ANY_SIZE_SIGNATURE = "any_size"
INPUT_NAME = "image"
"""The input of both signatures (and of every TFLite file): uint8 pixels."""
PROBABILITIES = "probabilities"
OUTPUT_NAMES = (PROBABILITIES, "class_id", "label")

SAVED_MODEL_FILE = "saved_model.pb"
KERAS_FILE = "model.keras"
TFLITE_FILE = "model.tflite"
LABELS_FILE = "labels.txt"
METADATA_FILE = "export.json"
EXTRA_FOLDER = "assets.extra"
"""The SavedModel folder for files that travel with a model (TF Serving ignores it)."""
SERVING_FOLDER = "serving"
"""Where a run folder's exports go by default: `RUN_FOLDER/serving/VERSION/`."""
