"""ddpm-deploy runtime: sample from an exported diffusers UNet2DModel with numpy and ONNX Runtime.

Never imports torch or diffusers.
"""

__version__ = "0.1.0"

from .errors import DeployError  # noqa: E402
from .pipeline import Pipeline  # noqa: E402
from .requests import SampleRequest  # noqa: E402
from .results import SampleResult  # noqa: E402

__all__ = ["DeployError", "Pipeline", "SampleRequest", "SampleResult", "__version__"]
