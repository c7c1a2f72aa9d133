"""One target under the fuzzing engine: ``python -m tests.fuzz.engine TARGET [libFuzzer flags]``.

The project's modules are instrumented as they are imported (Atheris), so libFuzzer's mutations are
guided by the branches they reach. A crash ends the run with libFuzzer's report and the input in
its artifact directory; run by tests/fuzz/__main__.py (``make fuzz``), which reads the summary."""

from __future__ import annotations

import os
import sys

import atheris

from tests.fuzz.__main__ import PLANT

INSTRUMENTED = ["bridge", "depthstream", "serving", "export.settings", "websockets", "json"]


def main() -> None:
    name, flags = sys.argv[1], sys.argv[2:]
    with atheris.instrument_imports(include=INSTRUMENTED):
        import websockets.frames  # noqa: F401
        import websockets.server  # noqa: F401

        import bridge.images  # noqa: F401  (imported here to be instrumented)
        import bridge.protocol  # noqa: F401
        import bridge.settings  # noqa: F401
        import bridge.triton  # noqa: F401
        import depthstream.model_config  # noqa: F401
        import depthstream.settings  # noqa: F401
        import export.settings  # noqa: F401
        from tests.fuzz.targets import TARGETS

        target = TARGETS[name]
        target.setup()  # the backend target imports the Python-backend model here
    run = target.run
    if os.environ.get(PLANT) == name:  # tests/test_fuzz.py: a crash must be reported as one

        def run(data: bytes) -> None:
            if b"config" in data:
                raise RuntimeError("a planted bug")
            target.run(data)

    atheris.Setup([sys.argv[0], *flags], run)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
