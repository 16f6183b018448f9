"""Using the ONNX model: predict from the command line and the HTTP server (no torch)."""
