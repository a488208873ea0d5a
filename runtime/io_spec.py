"""The UNet engine's inputs and outputs, declared once.

ONNX export takes its input/output names and dynamic axes from here, the TensorRT build its
optimization profile, the runners their input checks, and the manifest records the same
declaration so the runtime can check an engine before use.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

SAMPLE = "sample"
TIMESTEP = "timestep"
NOISE_PRED = "noise_pred"
BATCH = "batch"  # name of the dynamic leading axis


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name
    shape: tuple[int | str, ...]  # BATCH for the dynamic axis

    def concrete(self, batch: int) -> tuple[int, ...]:
        return tuple(batch if d == BATCH else int(d) for d in self.shape)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TensorSpec:
        return cls(name=raw["name"], dtype=raw["dtype"], shape=tuple(raw["shape"]))


@dataclass(frozen=True)
class BatchProfile:
    """The batch sizes an engine accepts: TensorRT's min / opt / max profile."""

    min: int = 1
    opt: int = 4
    max: int = 16

    def __post_init__(self):
        if not 1 <= self.min <= self.opt <= self.max:
            raise ValueError(f"batch profile needs 1 <= min <= opt <= max, got {self.min}/{self.opt}/{self.max}")

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class UNetIO:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @classmethod
    def for_model(cls, in_channels: int, out_channels: int, height: int, width: int) -> UNetIO:
        return cls(
            inputs=(
                TensorSpec(SAMPLE, "float32", (BATCH, in_channels, height, width)),
                TensorSpec(TIMESTEP, "float32", (BATCH,)),
            ),
            outputs=(TensorSpec(NOISE_PRED, "float32", (BATCH, out_channels, height, width)),),
        )

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    @property
    def sample(self) -> TensorSpec:
        return self.inputs[0]

    def input_batch_axes(self) -> dict[str, list[int]]:
        """For each input, the axes declared as BATCH (the exporter's dynamic shapes)."""
        return {t.name: [axis for axis, d in enumerate(t.shape) if d == BATCH] for t in self.inputs}

    def to_dict(self) -> dict[str, Any]:
        return {"inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs]}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> UNetIO:
        return cls(
            inputs=tuple(TensorSpec.from_dict(t) for t in raw["inputs"]),
            outputs=tuple(TensorSpec.from_dict(t) for t in raw["outputs"]),
        )
