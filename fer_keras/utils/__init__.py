"""The bottom layer: small helpers every other layer may use (messages that suggest a
name, number ranges, which Keras backend and TensorFlow are here, safe file writes).
It imports nothing else of fer_keras."""
