"""Layer 4, tuning: Keras Tuner job files, the hypermodel, searches (one process or
several) and their results. Imports the layers below it (utils, data, models, training)."""
