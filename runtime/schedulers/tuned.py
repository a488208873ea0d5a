"""Timestep schedules tuned by measurement for few UNet calls: ``python -m bench.compose --part timesteps``
(docs/bench-compose-timesteps.md) searched them on both trained digits models (a power-law family, then coordinate
descent on the sum of both models' FD), and ``--part table`` (docs/bench-compose.md) rechecked them on seeds the
search never scored. A request asks for one with ``tuned_timesteps`` and its sampler and steps.

They are training-step indices of a 1000-step schedule (the DDPM betas of the reference and digits models);
another training length is refused. For a model with another noise schedule they are a starting point, not a
measured optimum."""

from __future__ import annotations

from ..errors import InputError

TUNED: dict[tuple[str, int], tuple[int, ...]] = {
    ("dpmpp-3m", 5): (999, 715, 464, 309, 89),
    ("dpmpp-3m", 6): (999, 760, 544, 353, 235, 68),
    ("dpmpp-2m", 6): (950, 723, 517, 386, 231, 65),
}
TUNED_TRAIN_STEPS = 1000


def tuned_timesteps(sampler: str, steps: int | None, num_train_timesteps: int) -> tuple[int, ...]:
    """The tuned schedule of ``sampler`` at ``steps``; InputError naming those there are."""
    have = ", ".join(f"{name} {n}" for name, n in TUNED)
    if (sampler, steps) not in TUNED:
        raise InputError(f"no tuned timesteps for {sampler} at {steps if steps is not None else 'its default'} steps; "
                         f"tuned: {have}")
    if num_train_timesteps != TUNED_TRAIN_STEPS:
        raise InputError(f"the tuned timesteps index a {TUNED_TRAIN_STEPS}-step training schedule; this model's has "
                         f"{num_train_timesteps}: give steps or timesteps")
    return TUNED[(sampler, steps)]
