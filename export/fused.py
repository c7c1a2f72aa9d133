"""What every exported graph shares: the network it wraps, the spec it follows, and the
processor's normalization, ``(x * rescale - mean) / std``, as one multiply-add."""

from __future__ import annotations

import torch
from torch import nn

from depthstream.contract import ModelSpec


class FusedGraph(nn.Module):
    """Base of the fused graphs (export.graph for transformers' models, export.da3)."""

    scale: torch.Tensor  # buffers (register_buffer below), typed for the checker
    offset: torch.Tensor

    def __init__(self, network: nn.Module, spec: ModelSpec) -> None:
        super().__init__()
        self.network = network
        self.spec = spec
        std = torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1)
        mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("scale", spec.rescale / std, persistent=False)
        self.register_buffer("offset", -mean / std, persistent=False)
