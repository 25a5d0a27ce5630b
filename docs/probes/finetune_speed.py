"""Speed check of `finetune --folds 5` on 1,000 real FER2013 faces (docs/finetune.md).

Run from the repository root: `python docs/probes/finetune_speed.py` (it writes nothing
outside a temporary folder)."""

# Fine-tunes 1,000 FER2013 faces (96x96 colour, in a temporary folder) from the committed
# base run with the default recipe and 5-fold cross-validation (800 faces train each fold:
# 640 fit, 160 choose the epoch), trains the same network from scratch on the same splits
# (`scratch=True`), and prints each fold's fine-tuning seconds and the three accuracies.
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from fer_keras.adapt.finetune import finetune
from fer_keras.data.labels import FER2013
from fer_keras.data.sources import load_fer2013

images, labels, usages = load_fer2013("../shared/data/fer2013.csv.gz")
rows = np.flatnonzero(usages == "PrivateTest")[:1000]
with tempfile.TemporaryDirectory() as temp:
    data = Path(temp) / "faces"
    for row in rows:
        folder = data / FER2013.class_names[labels[row]]
        folder.mkdir(parents=True, exist_ok=True)
        gray = Image.fromarray(images[row, ..., 0]).resize((96, 96), Image.BICUBIC)
        gray.convert("RGB").save(folder / f"s{row:05d}_0.png")
    start = time.perf_counter()
    metrics = finetune(data, "saved_models/fer_vgg_kaggle_tuned_long", Path(temp) / "run",
                       folds=5, scratch=True, command="speed check", stream=sys.stdout)
    seconds = time.perf_counter() - start
cv, zero = metrics["cross_validation"], metrics["zero_shot_cross_validation"]
fresh = metrics["scratch_cross_validation"]
print(f"{metrics['images']} faces, 5 folds: fine-tuning seconds per fold "
      f"{cv['train_seconds']}; accuracy fine-tuned {cv['mean']:.2f} +- {cv['std']:.2f} "
      f"{cv['folds']}, zero-shot {zero['mean']:.2f} +- {zero['std']:.2f}, from scratch "
      f"{fresh['mean']:.2f} +- {fresh['std']:.2f} {fresh['folds']}; whole call "
      f"{seconds:.0f} s")
