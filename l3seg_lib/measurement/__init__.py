"""Measurement: body composition and verdicts, segmenting inputs, batch measurement of a folder."""
