"""Layer 4, serving: SavedModel and TFLite export, LiteRT, the checks every loaded model
passes, and one runner for .keras, SavedModel and .tflite files. Imports utils, data,
models and training."""
