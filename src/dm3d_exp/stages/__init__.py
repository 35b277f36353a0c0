"""Pipeline stages: calibrate -> sensitivity -> allocate -> prune -> evaluate (thin: core + adapters)."""
