"""What every part of depthstream shares: the model contract, Triton config helpers, settings.

The build step (``export``), the runtime (``bridge``, ``serving``), the tools (``client``,
``bench``) and the tests import from here; nothing here imports them.
"""
