"""What one stream asked for: its model, colormap, output and steady depth, changed by its config
messages (parsed by bridge/protocol.py), and the fields that ``hello`` and every acknowledgement
report them with; ``hello`` itself, which also says what a stream may choose and its limits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bridge import protocol
from bridge.protocol import DEFAULT_OUTPUT, ConfigUpdate
from bridge.rendering import RenderRequest
from bridge.settings import BridgeSettings
from depthstream.contract import known, known_models, spec_of
from depthstream.render.colorize import COLORMAPS


@dataclass
class StreamChoices:
    model: str
    colormap: str
    output: str = DEFAULT_OUTPUT
    steady: bool = True  # relative depth aligned to the stream (depthstream/render/steady.py)
    scene: int = 0  # the client's new_scene requests so far: each starts the alignment again
    random_weights_of: dict[str, bool] = field(default_factory=dict)  # per model checked

    @property
    def random_weights(self) -> bool:
        """Whether the stream's current model carries random weights (as last checked)."""
        return self.random_weights_of.get(self.model, False)

    def apply(self, update: ConfigUpdate) -> None:
        """A config message's changes (a new model: already checked with Triton by the caller)."""
        if update.model is not None:
            self.model = update.model
        if update.colormap is not None:
            self.colormap = update.colormap
        if update.output is not None:
            self.output = update.output
        if update.steady is not None:
            self.steady = update.steady
        self.scene += update.new_scene

    def request(self, model: str) -> RenderRequest:
        """What a frame is drawn with when its turn begins (``model``: the one the turn runs)."""
        return RenderRequest(model, self.colormap, self.output, self.steady, self.scene)

    def fields(self) -> dict[str, Any]:
        """The stream's settings, as hello and each acknowledgement carry them."""
        return {
            "model": self.model,
            # what the stream's depth means (None for a model this bridge has not read yet: the
            # configured default before Triton serves it; checked right after hello)
            "depth": spec_of(self.model).depth_meaning if known(self.model) else None,
            # whether its frames carry the camera it estimates (the depth header's "camera")
            "intrinsics": spec_of(self.model).intrinsics if known(self.model) else False,
            "colormap": self.colormap,
            "output": self.output,
            "steady": self.steady,
        }


def hello(settings: BridgeSettings, choices: StreamChoices, ready_models: list[str]) -> str:
    """The stream's first message: its choices, what it may choose, and its limits."""
    return protocol.hello_message(
        models=list(known_models()),
        ready=ready_models,  # of those, the ones served now
        **choices.fields(),
        colormaps=list(COLORMAPS),
        outputs=list(protocol.OUTPUTS),
        max_message_bytes=settings.max_message_bytes,
        max_pixels=settings.max_pixels,
        # what paces a client: frames over max_fps are dropped; a frame older than
        # request_timeout_s when its turn comes is dropped (both told in notices)
        max_fps=settings.max_fps,
        request_timeout_s=settings.request_timeout_s,
        error_codes=protocol.error_guide(),
    )
