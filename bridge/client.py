"""``python -m bridge.client``: where users already call the direct gRPC client; it lives in
``client/`` (``python -m client``), which is not part of the bridge (nor of its image)."""

import sys

if __name__ == "__main__":
    from client.__main__ import main

    sys.exit(main())
