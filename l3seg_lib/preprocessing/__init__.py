"""Preprocessing: HU window and model-size geometry; the processed data set."""
