"""runtime.guidance: one value per request; diffusers' combination and rescale, element by element."""

import numpy as np
import pytest

from runtime.errors import InputError
from runtime.guidance import NO_GUIDANCE, Guidance
from runtime.requests import SampleRequest

# rescale_noise_cfg in float32: two standard deviations (float64 here, torch's own reduction there), a ratio and
# a mix, each a float32 rounding or a few: a handful of ulps of values ~1-10.
RESCALE_RTOL, RESCALE_ATOL = 1e-5, 1e-6


def test_no_guidance_has_one_encoding():
    assert SampleRequest().guidance is NO_GUIDANCE
    assert Guidance.of(1.0) is NO_GUIDANCE and Guidance.of(1, 0.0) is NO_GUIDANCE
    assert not NO_GUIDANCE.active and NO_GUIDANCE.rows_per_image == 1
    guided = SampleRequest(class_labels=[1], guidance_scale=3, guidance_rescale=0.7).guidance
    assert guided == Guidance(3.0, 0.7) and guided.active and guided.rows_per_image == 2
    out = np.ones((2, 1, 2, 2), np.float32)
    assert NO_GUIDANCE.combine(out) is out


def test_combine_is_diffusers_expression_in_float32():
    torch = pytest.importorskip("torch")
    out = np.random.default_rng(0).standard_normal((4, 1, 3, 3)).astype(np.float32)
    uncond, cond = torch.from_numpy(out).chunk(2)
    reference = (uncond + 7.5 * (cond - uncond)).numpy()  # StableDiffusionPipeline's line
    np.testing.assert_array_equal(Guidance(7.5).combine(out), reference)


@pytest.mark.parametrize("rescale", [0.3, 0.7, 1.0])
def test_rescale_equals_diffusers_rescale_noise_cfg(rescale):
    torch = pytest.importorskip("torch")
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg

    rng = np.random.default_rng(1)
    out = np.concatenate([rng.standard_normal((3, 4, 8, 8)), 2 * rng.standard_normal((3, 4, 8, 8)) + 0.5]).astype(np.float32)
    uncond, cond = torch.from_numpy(out).chunk(2)
    guided = uncond + 5.0 * (cond - uncond)
    reference = rescale_noise_cfg(guided, cond, guidance_rescale=rescale).numpy()
    ours = Guidance(5.0, rescale).combine(out)
    np.testing.assert_allclose(ours, reference, rtol=RESCALE_RTOL, atol=RESCALE_ATOL)
    assert not np.allclose(ours, guided.numpy(), rtol=1e-2)  # the rescale did something


def test_rescale_of_an_image_does_not_depend_on_the_others():
    out = np.random.default_rng(2).standard_normal((4, 2, 4, 4)).astype(np.float32)
    both = Guidance(4.0, 0.5).combine(out)
    first = Guidance(4.0, 0.5).combine(out[[0, 2]])
    np.testing.assert_array_equal(both[:1], first)


@pytest.mark.parametrize("fields, message", [
    (dict(guidance_scale=2, guidance_rescale=-0.1), r"in \[0, 1\]"),
    (dict(guidance_scale=2, guidance_rescale=1.5), r"in \[0, 1\]"),
    (dict(guidance_scale=2, guidance_rescale=float("nan")), r"in \[0, 1\]"),
    (dict(guidance_scale=2, guidance_rescale=True), r"in \[0, 1\]"),
    (dict(guidance_rescale=0.5), "guided requests only"),
])
def test_the_request_refuses_a_bad_rescale(fields, message):
    with pytest.raises(InputError, match=message):
        SampleRequest(**fields)
