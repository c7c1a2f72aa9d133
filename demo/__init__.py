"""``make demo`` (``python -m demo``): the composition root that starts the embedded Triton
(``serving``) and the bridge (``bridge``) together; the one place both are imported."""
