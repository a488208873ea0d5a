"""The export's gates, one module for every stage that builds an artifact.

* The **parity gate** (``export.onnx``): the exported model must compute what the PyTorch model computes.
* The **accuracy gate** (``export.fp16``, ``export.bf16``): a reduced-precision model against the FP32
  one, noise predictions over the schedule and a short sampling run, measured as PSNR.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Mapping
from typing import Any

import numpy as np

from runtime.errors import DeployError, GateError
from runtime.io_spec import IMAGE_CONDITION, NOISE_PRED, SAMPLE, TIMESTEP, UNetIO
from runtime.manifest import Manifest

# Largest |ONNX Runtime - PyTorch| accepted on the FP32 noise prediction. Measured errors are around
# 2e-6 for tiny models and 5e-6 for the full reference config; 1e-3 leaves room for other CPUs'
# kernels while catching any real divergence (a wrong op or a baked-in shape gives errors of order 1).
FP32_PARITY_ATOL = 1e-3
PARITY_BATCHES = (1, 3)

FP16_MIN_PSNR_DB = 35.0  # per noise prediction, coremltools' definition (peak = max |reference|)
FP16_MIN_IMAGE_PSNR_DB = 35.0  # final image in [0, 1] after a short sampling run
GATE_TIMESTEP_FRACTIONS = (0.0, 0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 1.0)
GATE_SAMPLING_STEPS = 10
GATE_SEED = 0
GATE_BATCH = 1  # timesteps per gate call (peak memory: one image's activations)

log = logging.getLogger("export.gates")


@dataclass(frozen=True)
class ParityResult:
    batch: int
    timesteps: list[float]
    max_abs_error: float
    max_abs_reference: float

    def to_dict(self) -> dict:
        return {
            "batch": self.batch,
            "timesteps": self.timesteps,
            "max_abs_error": self.max_abs_error,
            "max_abs_reference": self.max_abs_reference,
        }


@dataclass(frozen=True)
class ParityCase:
    """One gate input and what PyTorch computes for it."""

    sample: np.ndarray
    timesteps: np.ndarray
    reference: np.ndarray
    conditioning: dict[str, np.ndarray]  # a different condition per row; {} for an unconditional UNet

    @property
    def batch(self) -> int:
        return len(self.timesteps)

    def feed(self) -> dict[str, np.ndarray]:
        return {SAMPLE: self.sample, TIMESTEP: self.timesteps, **self.conditioning}


def parity_sequence_lengths(io: UNetIO) -> tuple[int | None, ...]:
    """The token count of each parity batch: both ends of a dynamic sequence range."""
    if io.sequence is None:
        return (None,) * len(PARITY_BATCHES)
    return (io.sequence.min, io.sequence.max)


def torch_references(unet, io: UNetIO, seed: int = 0) -> list[ParityCase]:
    """PyTorch's outputs for the gate's inputs, computed before the export so that the torch model and
    its activations need not be resident together with ONNX Runtime's session (the gate's peak memory)."""
    import torch

    rng = np.random.default_rng(seed)
    cases = []
    for batch, tokens in zip(PARITY_BATCHES, parity_sequence_lengths(io)):
        sample = rng.standard_normal(io.sample.concrete(batch), dtype=np.float32)
        t = io.timestep_feed(io.timestep.spread(batch))  # distinct, over the model's own timestep range
        conditioning = io.example_conditioning(batch, rng, tokens)
        kwargs = {name: torch.from_numpy(value) for name, value in conditioning.items()}
        x = torch.from_numpy(sample)
        if IMAGE_CONDITION in kwargs:  # an image-conditioned UNet: the image after the sample's channels
            x = torch.cat([x, kwargs.pop(IMAGE_CONDITION)], dim=1)
        with torch.no_grad():
            reference = unet(x, torch.from_numpy(t), return_dict=False, **kwargs)[0].numpy()
        cases.append(ParityCase(sample, t, reference, conditioning))
    return cases


def check_parity(onnx_path: Path, cases: list[ParityCase], atol: float = FP32_PARITY_ATOL,
                 output: str = NOISE_PRED) -> list[ParityResult]:
    """Runs the ONNX model in ONNX Runtime (CPU) on ``cases`` (anything with ``feed()``, ``reference``, ``batch``,
    ``timesteps``, ``conditioning``); raises GateError past ``atol``."""
    from runtime.runners.ort import require_onnxruntime, session_options

    ort = require_onnxruntime()

    options = session_options()
    options.enable_cpu_mem_arena = False  # a few calls: give each call's activations back (peak -0.4 GB at cat-256)
    session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"])
    results = []
    for case in cases:
        (got,) = session.run([output], case.feed())
        err = float(np.max(np.abs(got.astype(np.float64) - case.reference))) if np.isfinite(got).all() else float("inf")
        magnitude = float(np.max(np.abs(case.reference)))
        results.append(ParityResult(case.batch, case.timesteps.tolist(), err, magnitude))
        # float32 kernels differ by ulps of the values they compute: outputs past 1 (NCSN++ divides by sigma, ~1e2
        # at sigma_min) are held to the tolerance relative to their magnitude
        if not err <= atol * max(1.0, magnitude):
            tokens = next((f", {v.shape[1]} tokens" for v in case.conditioning.values() if v.ndim == 3), "")
            raise GateError(
                f"parity gate failed{'' if output == NOISE_PRED else ' (' + output + ')'}: ONNX Runtime differs from "
                f"PyTorch by {err:.3g} (tolerance {atol:g} x max(1, {magnitude:.3g})) at batch "
                f"{case.batch}{tokens}, timesteps {case.timesteps.tolist()}; nothing was written. This is an export bug: "
                "report it with the model config"
            )
    return results


# the accuracy gate ---------------------------------------------------------------------------------
def psnr(reference: np.ndarray, test: np.ndarray, peak: float | None = None) -> float:
    """10·log10(peak² / MSE); peak defaults to max |reference| (coremltools' definition)."""
    reference = reference.astype(np.float64)
    mse = float(np.mean((reference - test.astype(np.float64)) ** 2))
    peak_sq = float(np.max(reference**2)) if peak is None else peak**2
    return float("inf") if mse == 0 else 10.0 * np.log10(peak_sq / mse)


def accuracy_timesteps(manifest: Manifest) -> np.ndarray:
    """The accuracy gate's timesteps: GATE_TIMESTEP_FRACTIONS of the model's timestep range, as the engine takes them."""
    return manifest.io.timestep_feed(np.unique(manifest.timestep_domain.at(GATE_TIMESTEP_FRACTIONS)))


def _noise_predictions(runner, x: np.ndarray, ts: np.ndarray, conditioning: dict[str, np.ndarray]) -> np.ndarray:
    """The gate's noise predictions, GATE_BATCH timesteps per call: the activations of a 256x256 UNet at
    batch 8 take gigabytes, and each prediction depends on its own row only."""
    return np.concatenate([
        runner.infer({SAMPLE: x[i:i + GATE_BATCH], TIMESTEP: ts[i:i + GATE_BATCH],
                      **{name: value[i:i + GATE_BATCH] for name, value in conditioning.items()}})[NOISE_PRED]
        for i in range(0, len(ts), GATE_BATCH)
    ])


def _sampling_run(runner, scheduler_config: dict[str, Any], label: str, images: int = 1) -> np.ndarray:
    """``images`` images of GATE_SAMPLING_STEPS steps, seeds GATE_SEED, GATE_SEED + 1, ..., one at a time (one
    image's activations at a time)."""
    from runtime.pipeline import Pipeline

    out = []
    for seed in range(GATE_SEED, GATE_SEED + images):
        conditioning = runner.io.example_conditioning(1, np.random.default_rng(seed)) or None
        try:
            out.append(Pipeline(runner, scheduler_config).run(steps=GATE_SAMPLING_STEPS, seed=seed,
                                                              conditioning=conditioning).unit_images())
        except DeployError as exc:
            raise GateError(f"{label} gate failed during the sampling run: {exc}") from None
    return np.concatenate(out)


def accuracy_gate(reference, candidate, manifest: Manifest, label: str,
                  min_psnr_db: float = FP16_MIN_PSNR_DB, min_image_psnr_db: float = FP16_MIN_IMAGE_PSNR_DB,
                  images: int = 1) -> dict[str, Any]:
    """A reduced-precision model (``candidate``, an inactive runner) against FP32 (``reference``; both described by
    ``manifest``, which gives the scheduler config and the timestep domain): noise
    predictions over timesteps spread across the schedule, then a short sampling run of ``images`` images with
    identical noise (their PSNR pooled: one MSE over all). Raises GateError on NaN/Inf or a PSNR below the
    thresholds (FP16's by default); returns the figures.

    One model is loaded at a time (the reference's outputs are kept, a few MB), so the gate's peak memory
    is one session and one image's activations, whatever the number of timesteps."""
    io, scheduler_config = reference.io, manifest.scheduler_config
    ts = accuracy_timesteps(manifest)
    rng = np.random.default_rng(GATE_SEED)
    x = rng.standard_normal(io.sample.concrete(len(ts)), dtype=np.float32)
    conditioning = io.example_conditioning(len(ts), rng)  # a different condition per timestep
    with reference:
        ref = _noise_predictions(reference, x, ts, conditioning)
        ref_image = _sampling_run(reference, scheduler_config, "FP32 reference in the " + label, images)
    with candidate:
        got = _noise_predictions(candidate, x, ts, conditioning)
        if not np.isfinite(got).all():
            bad = sorted({ts[i].item() for i in np.nonzero(~np.isfinite(got))[0]})
            raise GateError(f"{label} gate failed: NaN/Inf in the noise prediction at timesteps {bad}; nothing was written")
        per_t = [
            {"timestep": t.item(), "max_abs_error": float(np.max(np.abs(got[i] - ref[i]))), "psnr_db": psnr(ref[i], got[i])}
            for i, t in enumerate(ts)
        ]
        worst = min(per_t, key=lambda r: r["psnr_db"])
        log.info("%s noise prediction: worst PSNR %.1f dB at t=%g", label, worst["psnr_db"], worst["timestep"])
        if worst["psnr_db"] < min_psnr_db:
            raise GateError(
                f"{label} gate failed: noise prediction PSNR {worst['psnr_db']:.1f} dB at timestep {worst['timestep']} "
                f"is below {min_psnr_db} dB; nothing was written. Keep more of the graph in FP32 or use the FP32 engine"
            )
        image = _sampling_run(candidate, scheduler_config, label, images)
    image_psnr = psnr(ref_image, image, peak=1.0)
    runs = "a sampling run" if images == 1 else f"{images} sampling runs"
    log.info("%s %d-step %s: image PSNR %.1f dB vs FP32", label, GATE_SAMPLING_STEPS, runs, image_psnr)
    if image_psnr < min_image_psnr_db:
        raise GateError(
            f"{label} gate failed: image PSNR {image_psnr:.1f} dB vs FP32 over {runs} of {GATE_SAMPLING_STEPS} steps, "
            f"below {min_image_psnr_db} dB; nothing was written"
        )
    sampling = {"steps": GATE_SAMPLING_STEPS, "seed": GATE_SEED, "noise": "numpy", "image_psnr_db": image_psnr}
    if images > 1:
        sampling.update(images=images, per_image_psnr_db=[psnr(r, i, peak=1.0) for r, i in zip(ref_image, image)])
    return {
        "min_psnr_db": min_psnr_db,
        "min_image_psnr_db": min_image_psnr_db,
        "noise_prediction": per_t,
        "sampling": sampling,
    }


def gate_summary(gate: dict[str, Any]) -> str:
    worst = min(r["psnr_db"] for r in gate["noise_prediction"])
    return (f"noise prediction PSNR >= {worst:.1f} dB, {gate['sampling']['steps']}-step image PSNR "
            f"{gate['sampling']['image_psnr_db']:.1f} dB vs FP32")


# the feature-reuse gate ----------------------------------------------------------------------------
REUSE_GATE_INTERVAL = 2  # the feature-reuse gate's sampling runs: full and shallow steps alternate


@dataclass(frozen=True)
class ReuseEngines:
    """One precision's plain UNet and its two feature-reuse graphs, as inactive runners (the gate opens them)."""

    unet: Any
    graphs: dict[str, Any]  # role -> runner


def ort_reuse_engines(manifest: Manifest, pair, unet: Path, graphs: Mapping[str, Path], unet_entry=None,
                      entries: Mapping[str, Any] | None = None) -> ReuseEngines:
    """ONNX Runtime on the CPU for ``unet`` and the graphs of ``pair`` (a :class:`runtime.reuse.GraphPair`) at
    ``graphs`` (role -> path); the entries, where given, say how the runners run them (an INT8 engine's arithmetic)."""
    from runtime.runners import RunnerOptions
    from runtime.runners.ort import OrtRunner

    cpu, ios = RunnerOptions(device="cpu"), pair.ios(manifest.io)
    return ReuseEngines(OrtRunner(unet, manifest.io, unet_entry, cpu),
                        {role: OrtRunner(path, ios[role], (entries or {}).get(role), cpu) for role, path in graphs.items()})


def reuse_gate(reference: ReuseEngines, candidate: ReuseEngines, graph, manifest: Manifest, label: str,
               min_psnr_db: float = FP16_MIN_PSNR_DB, min_image_psnr_db: float = FP16_MIN_IMAGE_PSNR_DB,
               images: int = 1) -> dict[str, Any]:
    """A reduced-precision engine's feature-reuse graphs (``candidate``) against FP32's (``reference``), gated
    together: each graph's noise prediction over the gate's timesteps (the shallow graph fed its own precision's
    feature of the same input), then ``images`` sampling runs of GATE_SAMPLING_STEPS steps with full and shallow
    steps alternating (PSNR pooled). ``graph``: the pair's :class:`runtime.reuse.CacheGraph`. Raises GateError on
    NaN/Inf or below the thresholds (FP16's by default); returns the figures."""
    from runtime.io_spec import DEEP_FEATURE
    from runtime.pipeline import Pipeline
    from runtime.reuse import ROLES, GraphPair, ReuseGraphs

    ts = accuracy_timesteps(manifest)
    rng = np.random.default_rng(GATE_SEED)
    x = rng.standard_normal(manifest.io.sample.concrete(1), dtype=np.float32)
    conditioning = manifest.io.example_conditioning(1, rng)
    outputs, pictures = {}, {}
    for name, engines in (("reference", reference), ("candidate", candidate)):
        runners = {role: engines.graphs[role].activate() for role in ROLES}
        try:
            per_t = []
            for t in ts:
                full = runners["full"].infer({SAMPLE: x, TIMESTEP: t[None], **conditioning})
                shallow = runners["shallow"].infer({SAMPLE: x, TIMESTEP: t[None], **conditioning,
                                                    DEEP_FEATURE: full[DEEP_FEATURE]})
                per_t.append((full[NOISE_PRED], shallow[NOISE_PRED]))
            outputs[name] = per_t
            reuse = ReuseGraphs(GraphPair({role: role for role in ROLES}, graph), lambda _, role, like: runners[role])
            with engines.unet as unet:
                pipe = Pipeline(unet, manifest.scheduler_config, reuse=reuse)
                pictures[name] = np.concatenate([pipe.run(
                    steps=GATE_SAMPLING_STEPS, seed=seed, cache_interval=REUSE_GATE_INTERVAL,
                    conditioning=unet.io.example_conditioning(1, np.random.default_rng(seed)) or None).unit_images()
                    for seed in range(GATE_SEED, GATE_SEED + images)])
        finally:
            for runner in runners.values():
                runner.deactivate()
    per_t = []
    for t, (ref_full, ref_shallow), (got_full, got_shallow) in zip(ts, outputs["reference"], outputs["candidate"]):
        if not (np.isfinite(got_full).all() and np.isfinite(got_shallow).all()):
            raise GateError(f"{label} feature-reuse gate failed: NaN/Inf at timestep {t.item()}; nothing was written")
        per_t.append({"timestep": t.item(), "full_psnr_db": psnr(ref_full, got_full),
                      "shallow_psnr_db": psnr(ref_shallow, got_shallow)})
    worst = min(min(r["full_psnr_db"], r["shallow_psnr_db"]) for r in per_t)
    image_psnr = psnr(pictures["reference"], pictures["candidate"], peak=1.0)
    log.info("%s feature-reuse graphs: worst prediction PSNR %.1f dB, %d-step image PSNR %.1f dB (%d image(s), cache "
             "interval %d)", label, worst, GATE_SAMPLING_STEPS, image_psnr, images, REUSE_GATE_INTERVAL)
    if worst < min_psnr_db or image_psnr < min_image_psnr_db:
        raise GateError(f"{label} feature-reuse gate failed: prediction PSNR {worst:.1f} dB (min {min_psnr_db}), image "
                        f"PSNR {image_psnr:.1f} dB (min {min_image_psnr_db}) vs FP32; nothing was written")
    return {"min_psnr_db": min_psnr_db, "min_image_psnr_db": min_image_psnr_db, "noise_prediction": per_t,
            "sampling": {"steps": GATE_SAMPLING_STEPS, "cache_interval": REUSE_GATE_INTERVAL, "seed": GATE_SEED,
                         "images": images, "image_psnr_db": image_psnr}}


def reuse_summary(gate: dict[str, Any], names) -> str:
    return (f"feature-reuse graphs {', '.join(names)}: image PSNR {gate['sampling']['image_psnr_db']:.1f} dB vs FP32 "
            f"(cache interval {gate['sampling']['cache_interval']})")
