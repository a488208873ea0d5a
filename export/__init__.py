"""ddpm-deploy export: diffusers UNet2DModel → ONNX (FP32, parity-gated) and its manifest."""
