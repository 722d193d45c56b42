"""Running an intervention graph on a real model: hooks, generation steps, and batch rows."""
