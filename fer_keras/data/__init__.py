"""Layer 1, data: the FER2013 sources (Kaggle CSV, image folders), their cache, splits and
protocols, both input pipelines (tf.data and the NumPy `PyDataset`) and augmentation.

Imports only `fer_keras.utils`. The public names of `fer_keras.data.sources` are
re-exported here, so `from fer_keras.data import load_splits` reads as before.
"""

from fer_keras.data.sources import (  # noqa: F401
    CLASS_NAMES,
    DOWNLOAD_HINT,
    IMAGE_SIZE,
    IMAGE_SUFFIXES,
    MAX_LINE_BYTES,
    NUM_CLASSES,
    NUM_PIXELS,
    PIPELINES,
    PROTOCOLS,
    QUOTE_CHARS,
    SPLIT_SEED,
    SPLITS,
    USAGES,
    VALIDATION_FRACTION,
    DataError,
    ImageFiles,
    check_protocol,
    default_pipeline,
    list_image_folder,
    load_fer2013,
    load_image_folder,
    load_splits,
    make_dataset,
    parse_csv,
    resolve_data_path,
    source_fingerprint,
    split_indices,
    split_training,
)
