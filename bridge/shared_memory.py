"""A frame's tensors through system shared memory, with a Triton on the same host.

Over plain gRPC a 640x480 frame is 921,600 bytes of RGB serialized into the request and
1,228,800 bytes of depth serialized back, by both sides. Through a region both processes map,
the request carries only the region's name: the bridge writes the RGB there, Triton reads it
and writes the depth after it, and the bridge copies the depth out (bench/breakdown.py measures
what it buys, side by side with plain gRPC).

One region per request in flight, sized for the largest frame the bridge takes (tmpfs commits
only the pages a frame touches). A region goes back to the pool only after a request that
finished, zeroed (the frame does not stay in memory Triton maps). One abandoned mid-run (a
timeout, a client gone) may still be written by Triton, so it is retired: unlinked here,
unregistered with Triton once its request ends, and never reused: a late write can never land
in another frame's depth. At most MAX_RETIRING wait for Triton; beyond that, frames go over
plain gRPC until some are let go.

Triton knows a region by a name with a secret part, not by its /dev/shm name (which anyone on
the host can list): inference needs no key, so the name is what keeps another local process
from naming this bridge's region as its input or output.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time

import numpy as np
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

from depthstream.request import SHM_KEY_HEADER, shared_layout

log = logging.getLogger(__name__)

CALL_TIMEOUT_S = 2.0  # a register or unregister call: a Triton that hangs does not hold a frame
# a retired region is unregistered once Triton's request on it ends (Triton refuses before)
RETRY_FIRST_S, RETRY_MAX_S = 0.1, 2.0
RETIRE_GIVE_UP_S = 120.0  # beyond any request's deadline: a Triton that hangs keeps it
MAX_RETIRING = 4  # regions Triton may still write; more abandoned requests: plain gRPC meanwhile
CLOSE_WAIT_S = 5.0
REFUSED_RETRY_S = 30.0  # a Triton that refused a region is asked again after this long


class Region:
    """One region: the frame's RGB at offset 0, its depth right after. ``key`` is its /dev/shm
    name, ``name`` what Triton knows it by."""

    def __init__(self, key: str, byte_size: int) -> None:
        self.key = key
        self.name = f"{key}-{secrets.token_hex(16)}"
        self.byte_size = byte_size
        # created exclusively, mode 0600; multiprocessing's resource tracker unlinks it should
        # this process die without destroy()
        self.handle = shm.create_shared_memory_region(self.name, f"/{key}", byte_size, create_only=True)
        self.used = 0  # bytes the last frame wrote or was written: zeroed when it is released

    def fits(self, rgb: np.ndarray) -> bool:
        return sum(shared_layout(rgb[None].shape)) <= self.byte_size

    def write_frame(self, rgb: np.ndarray) -> None:
        self.used = sum(shared_layout(rgb[None].shape))
        shm.set_shared_memory_region(self.handle, [np.ascontiguousarray(rgb[None])])

    def read_depth(self, rgb_shape: tuple[int, ...]) -> np.ndarray:
        """A copy of the depth Triton wrote: the region is reused by the next frame."""
        offset, _ = shared_layout((1, *rgb_shape))
        view = shm.get_contents_as_numpy(self.handle, np.float32, [1, *rgb_shape[:2]], offset=offset)
        return view[0].copy()

    def clear(self) -> None:
        # zeroed in place (a memset), not copied from a buffer of zeros as large as the frame
        shm.get_contents_as_numpy(self.handle, np.uint8, [self.used]).fill(0)
        self.used = 0

    def destroy(self) -> None:
        shm.destroy_shared_memory_region(self.handle)


class RegionPool:
    """The regions of one Triton endpoint. ``key`` is Triton's shared-memory key, empty for a
    Triton that does not restrict that protocol."""

    def __init__(self, client, url: str, byte_size: int, key: str) -> None:
        self.client = client
        self.url = url
        self.byte_size = byte_size
        self.headers = {SHM_KEY_HEADER: key} if key else None
        self.prefix = f"ds-{secrets.token_hex(6)}"  # unique per bridge: several may share a Triton
        self.free: list[Region] = []
        self.in_use = 0
        self.made = 0
        self.retiring: set[asyncio.Task] = set()
        self.refused: str | None = None  # why Triton would not map a region: plain gRPC meanwhile
        self.refused_at = 0.0  # asked again after REFUSED_RETRY_S (a key set later, a Triton replaced)

    @property
    def registered(self) -> int:
        """Regions this bridge holds registered with Triton: free, in a request, or retiring."""
        return len(self.free) + self.in_use + len(self.retiring)

    async def acquire(self, timeout_s: float) -> Region | None:
        """A registered region, or None for plain gRPC: Triton would not map one (another
        host, a wrong key), or too many abandoned requests still hold theirs."""
        if self.refused is not None and time.monotonic() - self.refused_at < REFUSED_RETRY_S:
            return None
        region: Region | None
        if self.free:
            region = self.free.pop()
        elif len(self.retiring) >= MAX_RETIRING:
            return None
        else:
            region = await self._make(min(timeout_s, CALL_TIMEOUT_S))
            if region is None:
                return None
        self.in_use += 1
        return region

    async def _make(self, timeout_s: float) -> Region | None:
        self.made += 1
        try:
            region = Region(f"{self.prefix}-{self.made}", self.byte_size)
        except shm.SharedMemoryException as exc:  # no /dev/shm, or it is full
            self._refuse(f"no shared memory here: {exc.__cause__ or exc}")
            return None
        try:
            await self.client.register_system_shared_memory(
                region.name,
                f"/{region.key}",
                region.byte_size,
                headers=self.headers,
                client_timeout=timeout_s,
            )
        except InferenceServerException as exc:
            region.destroy()
            self._refuse(exc.message() or str(exc))
            return None
        except BaseException:  # cancelled (a client gone) while Triton may have registered it
            self._retire(region)
            raise
        return region

    def _refuse(self, why: str) -> None:
        said_before, self.refused, self.refused_at = self.refused, why, time.monotonic()
        if said_before != why:
            log.warning(
                "Triton at %s does not take shared memory from this bridge (%s); frames go over "
                "plain gRPC, asked again in %.0f s",
                self.url,
                why,
                REFUSED_RETRY_S,
            )

    def release(self, region: Region) -> None:
        """Back to the pool, zeroed: its request has finished."""
        self.in_use -= 1
        region.clear()
        self.free.append(region)

    def retire(self, region: Region) -> None:
        """Its request was abandoned (Triton may still write into it): never reuse it."""
        self.in_use -= 1
        self._retire(region)

    def _retire(self, region: Region) -> None:
        region.destroy()
        task = asyncio.get_running_loop().create_task(self._unregister(region.name))
        self.retiring.add(task)
        task.add_done_callback(self.retiring.discard)

    async def _unregister(self, name: str) -> None:
        """Until Triton lets it go: it refuses while a request still uses the region."""
        delay_s, waited_s = RETRY_FIRST_S, 0.0
        while True:
            try:
                await self.client.unregister_system_shared_memory(
                    name, headers=self.headers, client_timeout=CALL_TIMEOUT_S
                )
                return
            except InferenceServerException as exc:
                message = exc.message() or ""
                if "in use" not in message:  # gone with a restarted Triton: nothing to free
                    log.info("unregistering shared memory %s: %s", name, message)
                    return
                if waited_s >= RETIRE_GIVE_UP_S:
                    log.warning("Triton still uses shared memory %s after %.0f s; left to it", name, waited_s)
                    return
            await asyncio.sleep(delay_s)
            waited_s += delay_s
            delay_s = min(delay_s * 2, RETRY_MAX_S)

    def forget(self) -> None:
        """Triton failed (it may have restarted, its registrations gone with it): the free
        regions are let go (unregistered where Triton still has them); the ones in a request
        are retired when it fails. The next frame makes a new one, and Triton is asked anew."""
        for region in self.free:
            self._retire(region)
        self.free.clear()
        self.refused = None

    async def close(self) -> None:
        self.forget()
        if self.retiring:  # a shutdown waits a little for requests Triton still runs, not for ever
            await asyncio.wait(self.retiring, timeout=CLOSE_WAIT_S)
            for task in self.retiring:
                task.cancel()
