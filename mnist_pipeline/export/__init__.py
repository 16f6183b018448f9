"""ONNX export and the onnxruntime-vs-PyTorch parity check."""
