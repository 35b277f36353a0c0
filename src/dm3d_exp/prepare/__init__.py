"""Preparing real datasets for dm3d (``dm3d-prepare``)."""
