"""Timestep schedules tuned by measurement for few UNet calls (``python -m bench.compose --part timesteps``,
docs/bench-compose-timesteps.md): pass one as a request's ``timesteps`` with its sampler."""

TUNED: dict[tuple[str, int], tuple[int, ...]] = {}
