"""The UNet engine's inputs and outputs, declared once.

ONNX export takes its input/output names and dynamic axes from here, the TensorRT build its
optimization profile, the runners their input checks, and the manifest records the same
declaration so the runtime can check an engine before use.

Every engine takes ``sample [batch, C, H, W]`` and ``timestep [batch]``; what the timestep means
(:class:`TimestepDomain`: a training step, the noise level sigma, or a consistency model's
``250 ln sigma``), its range and its dtype (int64 where the model indexes an embedding table with
it, float32 otherwise) come from the model and its scheduler and are declared here too, so the gates
sample the range the model is used in and the runtime refuses a sampler of another domain. The
output ``noise_pred`` has the sample's channels, or twice as many for a model that also predicts its
variance (ADM's learned range). A conditional UNet adds
``class_labels [batch]`` (int64, in ``0 .. num_classes - 1``) and/or ``encoder_hidden_states
[batch, sequence, dim]`` (float32: the condition its cross-attention blocks take as keys and
values). The sequence length is an export choice: one fixed length, or a min/opt/max range that
is a dynamic axis (and a TensorRT profile dimension); :class:`SequenceRange` records it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

SAMPLE = "sample"
TIMESTEP = "timestep"
NOISE_PRED = "noise_pred"
LATENTS = "latents"  # a latent-diffusion decoder's input: the sampler's final sample
IMAGE = "image"  # its output, in [-1, 1] like a pixel-space sample
CLASS_LABELS = "class_labels"
ENCODER_HIDDEN_STATES = "encoder_hidden_states"
IMAGE_CONDITION = "image_condition"  # an image-conditioned UNet's image in [-1, 1], concatenated to the sample's channels
DEEP_FEATURE = "deep_feature"  # feature reuse: the full graph's cached deep feature, the shallow graph's input
BATCH = "batch"  # name of the dynamic leading axis
SEQUENCE = "sequence"  # name of encoder_hidden_states' dynamic token axis (when the length is a range)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name
    shape: tuple[int | str, ...]  # BATCH for the dynamic axis

    def concrete(self, batch: int, sequence: int | None = None) -> tuple[int, ...]:
        """The shape at ``batch`` rows (and ``sequence`` tokens, for a dynamic sequence axis)."""
        if SEQUENCE in self.shape and sequence is None:
            raise ValueError(f"{self.name} has a dynamic sequence axis: give its length")
        return tuple(batch if d == BATCH else sequence if d == SEQUENCE else int(d) for d in self.shape)

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
class SequenceRange:
    """The token counts ``encoder_hidden_states`` accepts: min == max is one fixed length."""

    min: int
    opt: int
    max: int

    def __post_init__(self):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (self.min, self.opt, self.max)) \
                or not 1 <= self.min <= self.opt <= self.max:
            raise ValueError(f"sequence length needs 1 <= min <= opt <= max, got {self.min}/{self.opt}/{self.max}")

    @property
    def fixed(self) -> bool:
        return self.min == self.max

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    def __str__(self) -> str:
        return str(self.min) if self.fixed else f"{self.min}..{self.max}"


TIMESTEP_KINDS = {
    "step": "a training step, 0 .. num_train_timesteps - 1 (DDPM, DDIM, PNDM, DPM-Solver)",
    "sigma": "the noise level sigma (score-SDE VE)",
    "log_sigma": "250 ln sigma (consistency models)",
}


@dataclass(frozen=True)
class TimestepDomain:
    """What the engine's timestep input means and the range its samplers feed it."""

    kind: str  # a key of TIMESTEP_KINDS
    min: float
    max: float

    def __post_init__(self):
        if self.kind not in TIMESTEP_KINDS:
            raise ValueError(f"timestep kind {self.kind!r} is not one of {', '.join(TIMESTEP_KINDS)}")
        if not (isinstance(self.min, (int, float)) and isinstance(self.max, (int, float)) and self.min <= self.max):
            raise ValueError(f"timestep range needs min <= max, got {self.min!r}..{self.max!r}")

    @classmethod
    def steps(cls, num_train_timesteps: int) -> TimestepDomain:
        return cls("step", 0, num_train_timesteps - 1)

    def at(self, fractions):
        """float32 timesteps at ``fractions`` (0 = min, 1 = max) of the range: whole numbers for training
        steps, log-spaced for sigma."""
        import numpy as np

        f = np.asarray(fractions, dtype=np.float64)
        if self.kind == "sigma":
            values = np.exp(np.log(self.min) + f * (np.log(self.max) - np.log(self.min)))
        else:
            values = self.min + f * (self.max - self.min)
        return (np.round(values) if self.kind == "step" else values).astype(np.float32)

    def spread(self, n: int):
        """``n`` distinct timesteps over the range, both ends included (the middle for n = 1)."""
        import numpy as np

        if n == 1 and self.kind == "step":  # the upper middle, as before domains were declared
            return np.array([(int(self.min) + int(self.max) + 1) // 2], dtype=np.float32)
        return self.at([0.5] if n == 1 else np.linspace(0.0, 1.0, n))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "min": self.min, "max": self.max}

    def __str__(self) -> str:
        return f"{self.kind} {self.min:g}..{self.max:g}"


@dataclass(frozen=True)
class UNetIO:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    num_classes: int | None = None  # class_labels' range, when the engine takes them
    sequence: SequenceRange | None = None  # encoder_hidden_states' token counts, when the engine takes them
    timestep: TimestepDomain | None = None  # None: training steps of the scheduler's range (manifests before it)

    @classmethod
    def for_model(cls, in_channels: int, out_channels: int, height: int, width: int, num_classes: int | None = None,
                  cross_attention_dim: int | None = None, sequence: SequenceRange | None = None,
                  timestep: TimestepDomain | None = None, timestep_dtype: str = "float32",
                  image_channels: int | None = None) -> UNetIO:
        """``in_channels``: the sample's; ``image_channels``: an image-conditioned UNet's image (its UNet takes
        ``in_channels + image_channels``, the image concatenated after the sample, as LDMSuperResolutionPipeline)."""
        inputs = [
            TensorSpec(SAMPLE, "float32", (BATCH, in_channels, height, width)),
            TensorSpec(TIMESTEP, timestep_dtype, (BATCH,)),
        ]
        if image_channels is not None:
            inputs.append(TensorSpec(IMAGE_CONDITION, "float32", (BATCH, image_channels, height, width)))
        if num_classes is not None:
            inputs.append(TensorSpec(CLASS_LABELS, "int64", (BATCH,)))
        if cross_attention_dim is not None:
            if sequence is None:
                raise ValueError("a cross-attention UNet needs its sequence length")
            tokens = sequence.min if sequence.fixed else SEQUENCE
            inputs.append(TensorSpec(ENCODER_HIDDEN_STATES, "float32", (BATCH, tokens, cross_attention_dim)))
        return cls(
            inputs=tuple(inputs),
            outputs=(TensorSpec(NOISE_PRED, "float32", (BATCH, out_channels, height, width)),),
            num_classes=num_classes,
            sequence=sequence if cross_attention_dim is not None else None,
            timestep=timestep,
        )

    @classmethod
    def for_decoder(cls, latent_shape: tuple[int, ...], image_shape: tuple[int, ...]) -> UNetIO:
        """A latent-diffusion decoder's I/O (``latents [batch, c, h, w]`` → ``image [batch, C, H, W]``): the
        same declaration type, so every runner runs it as it runs the UNet."""
        return cls(inputs=(TensorSpec(LATENTS, "float32", (BATCH, *latent_shape)),),
                   outputs=(TensorSpec(IMAGE, "float32", (BATCH, *image_shape)),))

    def with_feature(self, role: str, shape: tuple[int, ...]) -> UNetIO:
        """A feature-reuse graph's I/O (:mod:`runtime.reuse`): the UNet's, plus ``deep_feature [batch,
        *shape]`` as a second output (``role`` "full") or as a last input ("shallow")."""
        feature = TensorSpec(DEEP_FEATURE, "float32", (BATCH, *(int(d) for d in shape)))
        if role == "full":
            return replace(self, outputs=(*self.outputs, feature))
        if role == "shallow":
            return replace(self, inputs=(*self.inputs, feature))
        raise ValueError(f"a feature-reuse graph is 'full' or 'shallow', not {role!r}")

    def input(self, name: str) -> TensorSpec | None:
        return next((t for t in self.inputs if t.name == name), None)

    @property
    def conditioning_inputs(self) -> tuple[TensorSpec, ...]:
        """The inputs besides sample and timestep (class labels, encoder hidden states)."""
        return tuple(t for t in self.inputs if t.name not in (SAMPLE, TIMESTEP))

    def shapes(self, batch: int, which: str = "opt") -> dict[str, tuple[int, ...]]:
        """Every input's shape at ``batch`` rows and the sequence range's ``which`` (min / opt / max) length."""
        tokens = getattr(self.sequence, which) if self.sequence is not None else None
        return {t.name: t.concrete(batch, tokens) for t in self.inputs}

    def example_conditioning(self, rows: int, rng, sequence: int | None = None) -> dict:
        """Conditioning inputs for ``rows`` rows, a different condition per row (the export gates' feeds):
        class labels cycling through the classes, encoder hidden states standard normal."""
        import numpy as np

        out = {}
        for spec in self.conditioning_inputs:
            if spec.name == CLASS_LABELS:
                out[spec.name] = (np.arange(rows, dtype=np.int64) * 7 + 3) % self.num_classes
            elif spec.name == IMAGE_CONDITION:  # an image's range
                out[spec.name] = rng.uniform(-1, 1, spec.concrete(rows)).astype(np.float32)
            else:
                tokens = sequence or (self.sequence.opt if self.sequence is not None else None)
                out[spec.name] = rng.standard_normal(spec.concrete(rows, tokens), dtype=np.float32)
        return out

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    @property
    def sample(self) -> TensorSpec:
        return self.inputs[0]

    @property
    def learned_variance(self) -> bool:
        """Whether the output carries a predicted variance after the prediction (twice the sample's channels)."""
        return self.outputs[0].shape[1] == 2 * self.sample.shape[1]

    def timestep_domain(self, num_train_timesteps: int) -> TimestepDomain:
        """The declared domain, or (manifests written before it was declared) training steps."""
        return self.timestep or TimestepDomain.steps(num_train_timesteps)

    def timestep_feed(self, t):
        """``t`` as the engine's timestep input (int64 where the model indexes a table with it)."""
        import numpy as np

        return np.asarray(t).astype(self.input(TIMESTEP).dtype, copy=False)

    def input_dynamic_axes(self) -> dict[str, dict[int, str]]:
        """For each input, its dynamic axes and their names (BATCH, SEQUENCE): the exporter's dynamic shapes."""
        return {t.name: {axis: d for axis, d in enumerate(t.shape) if isinstance(d, str)} for t in self.inputs}

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs]}
        if self.num_classes is not None:
            out["num_classes"] = self.num_classes
        if self.sequence is not None:
            out["sequence"] = self.sequence.to_dict()
        if self.timestep is not None:
            out["timestep"] = self.timestep.to_dict()
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any], decoder: bool = False) -> UNetIO:
        """Raises KeyError, TypeError or ValueError for a malformed declaration (a UNet's, or with ``decoder``
        a latent decoder's)."""
        if decoder:
            io = cls(inputs=tuple(TensorSpec.from_dict(t) for t in raw["inputs"]),
                     outputs=tuple(TensorSpec.from_dict(t) for t in raw["outputs"]))
            if io.input_names != [LATENTS] or io.output_names != [IMAGE]:
                raise ValueError(f"a decoder takes {LATENTS} and gives {IMAGE}")
            return io
        sequence = raw.get("sequence")
        timestep = raw.get("timestep")
        io = cls(
            inputs=tuple(TensorSpec.from_dict(t) for t in raw["inputs"]),
            outputs=tuple(TensorSpec.from_dict(t) for t in raw["outputs"]),
            num_classes=raw.get("num_classes"),
            sequence=SequenceRange(**sequence) if sequence is not None else None,
            timestep=TimestepDomain(**timestep) if timestep is not None else None,
        )
        if io.input(TIMESTEP) is None or io.input(TIMESTEP).dtype not in ("float32", "int64"):
            raise ValueError("the timestep input must be float32 or int64")
        if io.outputs[0].shape[1] not in (io.sample.shape[1], 2 * io.sample.shape[1]):
            raise ValueError("noise_pred must have the sample's channels or twice as many (learned variance)")
        classes = io.num_classes
        if (io.input(CLASS_LABELS) is not None) != (classes is not None) or (
                classes is not None and (isinstance(classes, bool) or not isinstance(classes, int) or classes < 1)):
            raise ValueError("class_labels and num_classes must come together (num_classes >= 1)")
        if (io.input(ENCODER_HIDDEN_STATES) is not None) != (io.sequence is not None):
            raise ValueError("encoder_hidden_states and sequence must come together")
        return io
