"""The Triton Inference Server model (``model.py``, copied into model repositories by ``python -m
export.triton``; it imports ``triton_python_backend_utils``, which exists only inside Triton)."""
