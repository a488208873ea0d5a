"""The UNet2DModel family: every config option walked (served or refused), each member exported with its
own timestep domain and sampled equal to its diffusers pipeline.

Models are tiny and random (configs after diffusers' own UNet2DModel tests and the public checkpoints':
export.reference); deterministic samplers run on *calmed* ones (output conv scaled down) so they are not
chaotic. Images are compared as diffusers' pipelines return them (uint8 after their own post-processing).
"""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from export.family import OPTIONS, check_options, installed_options, timestep_domain
from export.load import ModelSource, ModelSourceError
from export.reference import (
    CD_SCHEDULER, LEARNED_RANGE_SCHEDULER, NCSNPP_SCHEDULER, TINY_CM_CONFIG, TINY_CONFIG, TINY_LEARNED_TIME_CONFIG,
    TINY_LEARNED_VARIANCE_CONFIG, TINY_NCSNPP_CONFIG, save_model,
)
from runtime import Pipeline
from runtime.errors import InputError
from runtime.manifest import read_manifest
from tests.conftest import export_engine

# As the other end-to-end tests: uint8 within 1 on at most 0.5 % of values (ONNX Runtime's and PyTorch's
# float32 kernels differ in the last bits; a pixel near a rounding boundary may go the other way).
MAX_PIXEL_DIFF, MAX_DIFF_FRACTION = 1, 0.005
# Where images saturate, the float samples are compared: the parity gate's ~1e-6 per call, through the
# sampler, relative to the sample's magnitude (a wrong coefficient or row moves it by ~1e-1).
MAX_SAMPLE_ERROR = 1e-4


def source(config, unet_class="UNet2DModel"):
    return ModelSource("test", Path("."), Path("m"), Path("m/w"), {"_class_name": unet_class, **config}, None)


# the option walk ---------------------------------------------------------------------------------------
def test_every_option_of_the_installed_unet2dmodel_is_classified():
    """A diffusers upgrade that adds or removes an option fails here until export.family.OPTIONS says what to do
    (the options are read from diffusers' source, as the export reads them: importing it would import torch)."""
    import inspect

    from diffusers import UNet2DModel

    assert installed_options() == tuple(inspect.signature(UNet2DModel.__init__).parameters)[1:]
    assert set(installed_options()) == set(OPTIONS)


REFUSED = [
    ("time_embedding_type", "sinusoidal"), ("mid_block_type", "UNetMidBlock2DCrossAttn"),
    ("down_block_types", ["CrossAttnDownBlock2D", "DownBlock2D"]), ("down_block_types", ["DownEncoderBlock2D"] * 2),
    ("down_block_types", ["KDownBlock2D"] * 2), ("up_block_types", ["AttnUpDecoderBlock2D", "UpBlock2D"]),
    ("up_block_types", ["KCrossAttnUpBlock2D"] * 2), ("downsample_type", "pool"), ("upsample_type", "nearest"),
    ("act_fn", "tanh"), ("resnet_time_scale_shift", "ada_group"), ("resnet_time_scale_shift", "spatial"),
    ("class_embed_type", "timestep"), ("class_embed_type", "identity"), ("sample_size", None), ("sample_size", [8]),
    ("out_channels", 4), ("num_class_embeds", 0), ("in_channels", 0),
    ("some_future_option", 1),  # unknown to the installed diffusers: it would silently ignore it
]


@pytest.mark.parametrize("option,value", REFUSED, ids=lambda v: str(v))
def test_options_we_cannot_serve_are_refused_in_one_line(option, value):
    with pytest.raises(ModelSourceError) as info:
        check_options(source({**TINY_CONFIG, option: value}))
    assert option in str(info.value) and "\n" not in str(info.value)


def test_an_option_the_project_does_not_know_is_refused():
    with pytest.raises(ModelSourceError, match="does not know this option"):
        check_options(source({**TINY_CONFIG, "brand_new": True}), installed=(*installed_options(), "brand_new"))


SERVED = [
    ("time_embedding_type", "positional"), ("center_input_sample", True), ("act_fn", "mish"), ("act_fn", "gelu"),
    ("resnet_time_scale_shift", "scale_shift"), ("downsample_type", "resnet"), ("upsample_type", "resnet"),
    ("mid_block_type", None), ("add_attention", False), ("attn_norm_num_groups", 4), ("time_embedding_dim", 48),
    ("down_block_types", ["ResnetDownsampleBlock2D", "AttnDownBlock2D"]),
    ("up_block_types", ["AttnUpBlock2D", "ResnetUpsampleBlock2D"]), ("dropout", 0.1), ("out_channels", 6),
]


@pytest.mark.parametrize("option,value", SERVED, ids=lambda v: str(v))
def test_served_options_pass_and_build_a_model_diffusers_runs(option, value):
    """Served values pass the walk, and diffusers builds and runs the model (no export: the traced graph
    follows PyTorch's own forward, which the parity gate checks on the members exported below)."""
    from diffusers import UNet2DModel

    config = {**TINY_CONFIG, option: value}
    check_options(source(config))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        out = UNet2DModel(**config).eval()(torch.zeros(1, 3, 16, 16), torch.tensor([10.0])).sample
    assert out.shape == (1, config["out_channels"], 16, 16) and torch.isfinite(out).all()


def test_timestep_domains():
    domain, dtype = timestep_domain(source(TINY_NCSNPP_CONFIG), {"_class_name": "ScoreSdeVeScheduler", **NCSNPP_SCHEDULER})
    assert (domain.kind, domain.min, domain.max, dtype) == ("sigma", 0.01, 1348.0, "float32")
    domain, _ = timestep_domain(source(TINY_CM_CONFIG), {"_class_name": "CMStochasticIterativeScheduler", **CD_SCHEDULER})
    assert domain.kind == "log_sigma" and domain.min == pytest.approx(250 * np.log(0.002))
    assert timestep_domain(source(TINY_LEARNED_TIME_CONFIG), {})[1] == "int64"
    with pytest.raises(ModelSourceError, match="Fourier time embedding takes the log"):
        timestep_domain(source(TINY_NCSNPP_CONFIG), {"_class_name": "DDPMScheduler"})
    with pytest.raises(ModelSourceError, match="learned time embedding"):
        timestep_domain(source(TINY_LEARNED_TIME_CONFIG), {"_class_name": "CMStochasticIterativeScheduler"})
    with pytest.raises(ModelSourceError, match="num_train_timesteps"):
        timestep_domain(source({**TINY_LEARNED_TIME_CONFIG, "num_train_timesteps": 500}), {"num_train_timesteps": 1000})


# the members, exported and sampled ------------------------------------------------------------------------
MEMBERS = {
    # name: (config, scheduler config, scheduler class, calm)
    "ncsnpp": (TINY_NCSNPP_CONFIG, NCSNPP_SCHEDULER, "ScoreSdeVeScheduler", None),
    "cm": (TINY_CM_CONFIG, CD_SCHEDULER, "CMStochasticIterativeScheduler", None),
    "learned_range": (TINY_LEARNED_VARIANCE_CONFIG, LEARNED_RANGE_SCHEDULER, "DDPMScheduler", None),
    "learned_time": (TINY_LEARNED_TIME_CONFIG, None, "DDPMScheduler", None),
}


@pytest.fixture(scope="module")
def member(request, tmp_path_factory):
    """(model folder, engine) of a family member."""
    name = request.param
    config, scheduler, scheduler_class, calm = MEMBERS[name]
    folder = save_model(tmp_path_factory.mktemp(name), config, scheduler, calm=calm, scheduler_class=scheduler_class)
    return folder, export_engine(folder, tmp_path_factory.mktemp(f"{name}_engine"))


def diffusers_pipeline(folder, pipeline_class):
    import diffusers

    unet = diffusers.UNet2DModel.from_pretrained(folder)
    scheduler_class = json.loads((folder / "scheduler_config.json").read_text())["_class_name"]
    pipe = getattr(diffusers, pipeline_class)(unet=unet, scheduler=getattr(diffusers, scheduler_class).from_pretrained(folder))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def compare(ours, theirs, what):
    theirs = (theirs * 255).round().astype(np.uint8)  # the pipelines' numpy_to_pil conversion
    diff = np.abs(ours.astype(np.int16) - theirs.astype(np.int16))
    print(f"\n{what}: uint8 max diff {diff.max()}, {(diff > 0).mean():.3%} of values differ; "
          f"{((theirs == 0) | (theirs == 255)).mean():.0%} saturated")
    assert ours.shape == theirs.shape
    assert diff.max() <= MAX_PIXEL_DIFF and (diff > 0).mean() <= MAX_DIFF_FRACTION
    return diff


@pytest.mark.parametrize("member", ["ncsnpp"], indirect=True)
def test_ncsnpp_exports_its_sigma_domain_and_sde_ve_equals_score_sde_ve_pipeline(member):
    folder, engine = member
    manifest = read_manifest(engine.parent / "manifest.json")
    assert manifest.io.timestep.kind == "sigma" and manifest.io.timestep.min == 0.01
    parity = manifest.artifact("unet.onnx").build["parity"]["results"]
    assert min(min(r["timesteps"]) for r in parity) == pytest.approx(0.01)  # the gate feeds the model's own range
    with Pipeline.load(engine, cache_dir=None) as pipe:
        assert pipe.default_scheduler == "sde-ve"
        trajectory = pipe.run(count=2, steps=10, seed=3, noise="torch")
        with pytest.raises(InputError, match="use sde-ve"):
            pipe.sample(steps=3, scheduler="ddim")
    pipe = diffusers_pipeline(folder, "ScoreSdeVePipeline")
    means = []  # the pipeline clamps the last predictor's mean to [0, 1]; a random NCSN++ leaves it far outside,
    step_pred = pipe.scheduler.step_pred  # so the comparison is of the mean itself, caught on its way out

    def keep_mean(*args, **kwargs):
        out = step_pred(*args, **kwargs)
        means.append(out.prev_sample_mean.numpy())
        return out

    pipe.scheduler.step_pred = keep_mean
    theirs = pipe(batch_size=2, num_inference_steps=10, generator=torch.manual_seed(3), output_type="np").images
    compare(trajectory.uint8_images(), theirs, "NCSN++ + score-SDE VE, 10 levels x (1 corrector + 1 predictor)")
    err, scale = float(np.abs(trajectory.x - means[-1]).max()), float(np.abs(means[-1]).max())
    print(f"final mean: max |ours - diffusers| {err:.3g} of a magnitude {scale:.3g}")
    assert err <= MAX_SAMPLE_ERROR * scale


@pytest.mark.parametrize("member", ["cm"], indirect=True)
@pytest.mark.parametrize("steps,timesteps", [(1, None), (2, None), (None, (22, 0))])
def test_consistency_model_equals_consistency_model_pipeline(member, steps, timesteps):
    """One and two UNet calls, and the steps given outright (the pipeline's timesteps=, a request field)."""
    folder, engine = member
    with Pipeline.load(engine, cache_dir=None) as pipe:
        assert pipe.default_scheduler == "cm" and pipe.runner.io.timestep.kind == "log_sigma"
        ours = pipe.sample(count=2, steps=steps, timesteps=timesteps, seed=5, noise="torch", class_labels=[1, 7])
        with pytest.raises(InputError, match="timesteps must descend"):
            pipe.sample(timesteps=(0, 22), class_labels=[1])
    theirs = diffusers_pipeline(folder, "ConsistencyModelPipeline")(
        batch_size=2, num_inference_steps=steps or 1, timesteps=list(timesteps) if timesteps else None, class_labels=[1, 7],
        generator=torch.manual_seed(5), output_type="np").images
    compare(ours, theirs, f"consistency model, {steps or timesteps} UNet call(s)")


@pytest.mark.parametrize("member", ["learned_range"], indirect=True)
def test_learned_variance_equals_ddpm_pipeline(member):
    folder, engine = member
    with Pipeline.load(engine, cache_dir=None) as pipe:
        assert pipe.runner.io.learned_variance
        ours = pipe.sample(count=2, steps=50, seed=2, noise="torch")
        ddim = pipe.sample(count=1, steps=5, scheduler="ddim")  # other samplers take the prediction half
        assert ddim.shape == (1, 16, 16, 3)
    theirs = diffusers_pipeline(folder, "DDPMPipeline")(batch_size=2, num_inference_steps=50,
                                                        generator=torch.manual_seed(2), output_type="np").images
    compare(ours, theirs, "learned_range variance, DDPM 50 steps")


@pytest.mark.parametrize("member", ["learned_time"], indirect=True)
def test_learned_time_embedding_takes_int64_timesteps(member):
    folder, engine = member
    manifest = read_manifest(engine.parent / "manifest.json")
    assert manifest.io.input("timestep").dtype == "int64"
    with Pipeline.load(engine, cache_dir=None) as pipe:
        ours = pipe.sample(count=2, steps=20, seed=4, noise="torch")
    theirs = diffusers_pipeline(folder, "DDPMPipeline")(batch_size=2, num_inference_steps=20,
                                                        generator=torch.manual_seed(4), output_type="np").images
    compare(ours, theirs, "learned time embedding, DDPM 20 steps")


# latent diffusion: the decoder as the manifest's second artifact ------------------------------------------
@pytest.fixture(scope="module", params=["VQModel", pytest.param("AutoencoderKL", marks=pytest.mark.slow)])
def ldm(request, tmp_path_factory):
    """(folder, engine, autoencoder class): the session's latent model (VQModel; tests/conftest.py), or one with
    an AutoencoderKL."""
    from export.reference import save_ldm

    if request.param == "VQModel":
        engine = request.getfixturevalue("ldm_engine")
        return Path(read_manifest(engine.parent / "manifest.json").model["source"]), engine, "VQModel"
    folder = save_ldm(tmp_path_factory.mktemp("ldm"), autoencoder=request.param)
    return folder, export_engine(folder, tmp_path_factory.mktemp("ldm_engine")), request.param


def test_latent_model_exports_its_decoder_and_equals_ldm_pipeline(ldm):
    import diffusers

    folder, engine, autoencoder = ldm
    manifest = read_manifest(engine.parent / "manifest.json")
    assert manifest.decoder["class"] == autoencoder and manifest.decoder_artifact == "decoder.onnx"
    gate = manifest.artifact("decoder.onnx").build["parity"]["results"]
    assert [r["batch"] for r in gate] == [1, 3] and max(r["max_abs_error"] for r in gate) < 1e-4
    with Pipeline.load(engine, cache_dir=None) as pipe:
        assert pipe.image_shape == (16, 16, 3) and (pipe.height, pipe.width) == (8, 8)  # decoded image vs latents
        ours = pipe.sample(count=2, steps=20, seed=0, noise="torch")
    vae = getattr(diffusers, autoencoder).from_pretrained(folder / ("vqvae" if autoencoder == "VQModel" else "vae"))
    pipe = diffusers.LDMPipeline(vqvae=vae, unet=diffusers.UNet2DModel.from_pretrained(folder / "unet"),
                                 scheduler=diffusers.DDIMScheduler.from_pretrained(folder / "scheduler"))
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(batch_size=2, num_inference_steps=20, generator=torch.manual_seed(0), output_type="np").images
    compare(ours, theirs, f"LDM ({autoencoder} decoder), DDIM 20 steps")


def test_a_tampered_decoder_is_refused(ldm, tmp_path):
    import shutil

    from runtime.errors import ManifestError

    _, engine, _ = ldm
    copy = tmp_path / "engine"
    shutil.copytree(engine.parent, copy)
    with open(copy / "decoder.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ManifestError, match="decoder.onnx does not match"):
        Pipeline.load(copy / "unet.onnx", cache_dir=None)


@pytest.mark.slow  # 3 min: make test-full
@pytest.mark.parametrize("member", ["cm", "learned_range", "learned_time", "ncsnpp"], indirect=True)
def test_fp16_gate_on_the_family(member, tmp_path, capsys):
    """export.fp16's gate over each member's own timestep range: consistency model, learned variance and learned
    time pass; NCSN++ is refused (exit 3, nothing written): at sigma_max its output is the score divided by
    1348, where FP16 loses too much (measured on the AMD EPYC kind: 32.6 dB < 35 dB)."""
    import shutil

    from export.fp16 import PROG, main
    from runtime.cli import run

    folder = Path(shutil.copytree(member[1].parent, tmp_path / "engines"))
    code = run(main, PROG, ["--engines", str(folder)])
    refused = member[1].parent.name.startswith("ncsnpp")
    assert code == (3 if refused else 0)
    assert (folder / "unet.fp16.onnx").exists() is not refused
    if refused:
        assert "FP16 gate failed" in capsys.readouterr().err
    else:
        gate = read_manifest(folder / "manifest.json").artifact("unet.fp16.onnx").build["gate"]
        print(f"\n{folder}: FP16 noise prediction PSNR >= {min(r['psnr_db'] for r in gate['noise_prediction']):.1f} dB, "
              f"image {gate['sampling']['image_psnr_db']:.1f} dB")
