"""Poison detectors over the training split (one module each) and the post-fit callback."""
