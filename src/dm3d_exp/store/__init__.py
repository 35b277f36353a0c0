"""What the stages persist: the content-addressed stage cache and the stages' code versions (below the
stages, above the core; orchestration in :mod:`dm3d_exp.pipeline` uses them, never the other way round)."""
