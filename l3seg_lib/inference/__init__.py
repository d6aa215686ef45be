"""Inference, apart from training: model files, the network, and slices -> labels.

``network``     the U-Net
``checkpoint``  model files (safe loading)
``device``      CUDA when present, else CPU
``predictor``   window and resize, run the network(s), resize back to the original grid

Nothing here imports the training stack (augmentation, scikit-learn, the optimiser).
"""
