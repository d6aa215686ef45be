"""Evaluation: metrics (Dice, IoU, areas, Bland-Altman), a model on held-out patients, comparisons."""
