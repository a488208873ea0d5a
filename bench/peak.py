"""``python -m bench.peak --mode quick|full``: this machine's measured GEMM peak per precision, and each engine's
distance to it.

Peaks, measured here with the libraries the engines run on (median of repeats, the runtime's default threads, a
square GEMM large enough to be compute-bound):

* FP32: ONNX Runtime's MatMul (MLAS SGEMM), and numpy's (OpenBLAS) beside it; the peak is the faster;
* INT8: ONNX Runtime's ``MatMulInteger`` (uint8 x int8 → int32: the kernels a QDQ engine's convolutions and
  matmuls fuse into; VNNI/AMX where the CPU has them), in GOP/s (a multiply-add is two operations);
* BF16: OpenVINO's MatMul compiled with ``INFERENCE_PRECISION_HINT=bf16`` (AVX512_BF16/AMX), where the CPU has
  BF16 units.

Then each engine of the cat-256 config (``full``; ``quick``: a 64x64 config) that ``export.cpu`` built in the
folder (``build/bench/reuse/MODE-branch0``: FP32, and BF16 and INT8 where this CPU has the units, with the feature-
reuse graphs) is timed per batch-1 call, and its arithmetic rate (the UNet's FLOPs per call, counted by PyTorch's FlopCounterMode: INT8 engines count
the same operations, some of them FP32) is printed as a fraction of its precision's peak; with ONNX Runtime's
profile of one call, time per op type, which says what holds an engine back. Writes ``docs/bench-peak-MODE.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from . import machine
from .cpu_precision import median_time
from runtime.cli import require, run

ROOT = Path(__file__).resolve().parents[1]
MODES = {"quick": {"gemm": 1024, "repeats": 5, "calls": 3}, "full": {"gemm": 2048, "repeats": 7, "calls": 3}}


def median_seconds(fn, repeats: int) -> float:
    return median_time(fn, repeats)[0]


def _ort_session(model, threads: int):
    import onnxruntime as ort

    from runtime.runners.ort import session_options

    options = session_options()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"])


def fp32_peak(n: int, repeats: int, threads: int) -> dict[str, float]:
    """GFLOP/s of an n x n x n SGEMM: ONNX Runtime's MatMul and numpy's."""
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "sgemm",
                              [helper.make_tensor_value_info(name, TensorProto.FLOAT, [n, n]) for name in "ab"],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])])
    session = _ort_session(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), threads)
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    flops = 2.0 * n**3
    return {"onnxruntime": flops / median_seconds(lambda: session.run(None, {"a": a, "b": b}), repeats) / 1e9,
            "numpy": flops / median_seconds(lambda: a @ b, repeats) / 1e9}


def int8_peak(n: int, repeats: int, threads: int) -> float:
    """GOP/s of an n x n x n uint8 x int8 → int32 GEMM in ONNX Runtime (MatMulInteger)."""
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("MatMulInteger", ["a", "b"], ["c"])], "igemm",
                              [helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n]),
                               helper.make_tensor_value_info("b", TensorProto.INT8, [n, n])],
                              [helper.make_tensor_value_info("c", TensorProto.INT32, [n, n])])
    session = _ort_session(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), threads)
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (n, n), dtype=np.uint8)
    b = rng.integers(-128, 128, (n, n), dtype=np.int8)
    return 2.0 * n**3 / median_seconds(lambda: session.run(None, {"a": a, "b": b}), repeats) / 1e9


def bf16_peak(n: int, repeats: int, threads: int) -> float | None:
    """GFLOP/s of an n x n x n MatMul in OpenVINO at BF16 inference precision (None: no BF16 units here)."""
    try:
        import openvino as ov
        import openvino.opset13 as ops
    except ImportError:
        return None
    core = ov.Core()
    if "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        return None
    rng = np.random.default_rng(0)
    a = ops.parameter([n, n], np.float32, name="a")
    b = ops.constant(rng.standard_normal((n, n), dtype=np.float32))
    model = ov.Model([ops.matmul(a, b, False, False)], [a], "bgemm")
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "bf16", "INFERENCE_NUM_THREADS": threads})
    request = compiled.create_infer_request()
    x = rng.standard_normal((n, n), dtype=np.float32)
    return 2.0 * n**3 / median_seconds(lambda: request.infer({0: x}), repeats) / 1e9


def unet_flops(model_dir: Path) -> float:
    """FLOPs of one batch-1 UNet call, counted by PyTorch."""
    import torch
    from diffusers import UNet2DModel
    from torch.utils.flop_counter import FlopCounterMode

    unet = UNet2DModel.from_pretrained(model_dir).eval()
    x = torch.zeros(1, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        unet(x, torch.tensor([500]))
    return float(counter.get_total_flops())


def op_profile(engine: Path, threads: int) -> dict[str, float]:
    """Milliseconds per ONNX Runtime op type in one batch-1 call (its profiler; the call after a warm-up)."""
    import onnxruntime as ort

    from runtime.manifest import read_manifest
    from runtime.runners.ort import session_options

    io = read_manifest(engine.parent / "manifest.json").domain_io
    options = session_options()
    options.intra_op_num_threads = threads
    with tempfile.TemporaryDirectory() as tmp:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(str(engine), sess_options=options, providers=["CPUExecutionProvider"])
        feed = {"sample": np.random.default_rng(0).standard_normal(io.sample.concrete(1), dtype=np.float32),
                "timestep": io.timestep_feed(io.timestep.at((0.5,)))}
        for _ in range(2):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    last_run = max(e["ts"] for e in events if e.get("name") == "model_run")
    per_op: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and event["ts"] >= last_run:
            per_op[event["args"]["op_name"]] += event["dur"] / 1e3
    return dict(sorted(per_op.items(), key=lambda item: -item[1]))


def engines_folder(mode: str) -> Path:
    """The MODE config (random weights) with its feature-reuse graphs (bench.reuse's folder) and export.cpu's engines
    (noise calibration: random weights sample no images to calibrate on); built once."""
    from export.cpu import main as cpu_main
    from runtime.manifest import read_manifest
    from runtime.selection import fastest

    from .__main__ import prepare
    from .reuse import with_graphs

    model, engine = prepare(mode)
    folder = with_graphs(model, engine, 0, ROOT / "build" / "bench" / "reuse" / f"{mode}-branch0").parent
    if fastest(read_manifest(folder / "manifest.json")) is None:  # export.cpu has not run on this CPU kind
        assert cpu_main(["--engines", str(folder), "--calibration", "noise"]) == 0
    return folder


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="bench.peak", description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=MODES, default="quick")
    ap.add_argument("--out", default=str(ROOT / "docs"))
    args = ap.parse_args(argv)
    require("bench.peak", {"torch": "export", "diffusers": "export", "onnx": "export"})
    cfg = MODES[args.mode]
    from runtime.cpu import cpu_flags
    from runtime.engine import open_engine
    from runtime.io_spec import SAMPLE, TIMESTEP
    from runtime.runners.ort import default_threads
    from runtime.selection import precision_of, unet_engines
    from runtime.manifest import read_manifest

    from .__main__ import prepare

    threads, n = default_threads(), cfg["gemm"]
    fp32 = fp32_peak(n, cfg["repeats"], threads)
    peaks = {"fp32": max(fp32.values()), "int8": int8_peak(n, cfg["repeats"], threads),
             "bf16": bf16_peak(n, cfg["repeats"], threads)}
    print(f"peaks: FP32 {fp32}, INT8 {peaks['int8']:.0f} GOP/s, BF16 {peaks['bf16']}", flush=True)
    folder = engines_folder(args.mode)
    flops = unet_flops(prepare(args.mode)[0])
    manifest = read_manifest(folder / "manifest.json")
    rows = []
    for name, entry in sorted(unet_engines(manifest).items()):
        precision = precision_of(entry)
        if precision not in peaks or peaks[precision] is None:
            continue
        runner = open_engine(folder / name, device="cpu", threads=threads, cache_dir=None)[0]
        try:
            io = manifest.domain_io
            feed = {SAMPLE: np.random.default_rng(0).standard_normal(io.sample.concrete(1), dtype=np.float32),
                    TIMESTEP: io.timestep_feed(io.timestep.at((0.5,)))}
            seconds = median_seconds(lambda: runner.infer(feed), cfg["calls"])
        finally:
            runner.deactivate()
        rate = flops / seconds / 1e9
        profile = op_profile(folder / name, threads) if entry.kind == "onnx" else {}
        rows.append({"engine": name, "precision": precision, "seconds": seconds, "rate": rate,
                     "fraction": rate / peaks[precision], "profile": profile})
        print(f"{name}: {seconds:.3f} s per call, {rate:.0f} G/s, {rate / peaks[precision]:.0%} of the {precision} peak",
              flush=True)
    units = ", ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
                      if f in cpu_flags())
    config = "google/ddpm-cat-256 config" if args.mode == "full" else "quick config (64x64)"
    lines = [
        f"# Distance to this machine's limit ({args.mode})",
        "",
        f"`python -m bench.peak --mode {args.mode}`. {machine.describe()}; CPU units: {units}; {threads} threads.",
        "",
        f"Measured GEMM peaks ({n} x {n} x {n}, median of {cfg['repeats']}): FP32 **{peaks['fp32']:.0f} GFLOP/s** "
        f"(ONNX Runtime MatMul {fp32['onnxruntime']:.0f}, numpy {fp32['numpy']:.0f}); INT8 **{peaks['int8']:.0f} GOP/s** "
        "(ONNX Runtime MatMulInteger, uint8 x int8); BF16 "
        + (f"**{peaks['bf16']:.0f} GFLOP/s** (OpenVINO MatMul at BF16)" if peaks["bf16"] else
           "not measured (no BF16 units on this CPU, or no OpenVINO)") + ".",
        "",
        f"Engines of the {config} (`export.cpu`'s, random weights), one batch-1 UNet call (median of {cfg['calls']}); "
        f"{flops / 1e9:.3g} GFLOP per call (PyTorch's count; the INT8 engine's counted alike, some of it kept FP32):",
        "",
        "| engine | precision | s per call | G(FL)OP/s | of its precision's peak |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['engine']} | {r['precision']} | {r['seconds']:.3f} | {r['rate']:.0f} | {r['fraction']:.0%} |")
    for r in rows:
        if r["profile"]:
            total = sum(r["profile"].values())
            top = ", ".join(f"{op} {ms / total:.0%}" for op, ms in list(r["profile"].items())[:8])
            lines += ["", f"{r['engine']}: time per op type over one call (ONNX Runtime's profiler, {total:.0f} ms of "
                          f"kernels): {top}."]
    (Path(args.out) / f"bench-peak-{args.mode}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(run(main, "bench.peak"))
