"""The shipped demo model: training (demo.train), sampling a grid (demo.grid), quality (demo.quality)."""
