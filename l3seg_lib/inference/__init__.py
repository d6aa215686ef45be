"""Inference, apart from training: ONNX model files run by onnxruntime, slices -> labels.

``model_file``  l3seg ONNX files: metadata, execution providers (CUDA when present)
``predictor``   window and resize, run the model, resize back to the original grid

Nothing here imports PyTorch or the training stack.
"""
