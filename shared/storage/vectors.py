"""Vectors as float32 bytes, and exact cosine top-k over them with numpy."""

from __future__ import annotations

import sys
from array import array
from collections.abc import Sequence
from typing import TYPE_CHECKING

from shared.errors import BadRequest

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Matrix = npt.NDArray[np.float32]


class DimensionMismatch(BadRequest):
    """A vector of another size than the one fixed for the agent."""


def to_bytes(vector: Sequence[float]) -> bytes:
    """Return ``vector`` as little-endian float32 bytes."""
    # array, not numpy: the services that only pack vectors need not load numpy (~17 MB).
    packed = array("f", vector)
    if sys.byteorder == "big":
        packed.byteswap()
    return packed.tobytes()


def dimensions_of(blob: bytes) -> int:
    """Return how many float32 values ``blob`` holds, or raise ``BadRequest`` if it cannot be one.

    Raises:
        BadRequest: ``blob`` is empty or its length is not a multiple of 4 bytes.
    """
    if not blob or len(blob) % 4:
        raise BadRequest(
            f"a vector of {len(blob)} bytes is not float32: expected 4 bytes per dimension, "
            "at least one dimension"
        )
    return len(blob) // 4


def from_bytes(blob: bytes) -> list[float]:
    """Return the floats stored by ``to_bytes``."""
    unpacked = array("f", blob)
    if sys.byteorder == "big":
        unpacked.byteswap()
    return unpacked.tolist()


def check_dimension(expected: int | None, vector: Sequence[float]) -> int:
    """Return the vector's size, raising ``DimensionMismatch`` if it is not ``expected``."""
    return check_size(expected, len(vector))


def check_size(expected: int | None, size: int) -> int:
    """Return ``size`` (dimensions), raising ``DimensionMismatch`` if it is not ``expected``.

    Raises:
        BadRequest: ``size`` is 0.
        DimensionMismatch: ``expected`` is set and differs; its details name both sizes.
    """
    if size == 0:
        raise BadRequest("an embedding must have at least one dimension")
    if expected is not None and size != expected:
        raise DimensionMismatch(
            f"embedding has {size} dimensions but this agent stores {expected}-dimension "
            "vectors; use the same embedding model, or a new agent",
            details={"expected": str(expected), "got": str(size)},
        )
    return size


def top_k(
    query: Sequence[float], blobs: Sequence[bytes], *, count: int, threshold: float
) -> list[tuple[int, float]]:
    """Return ``(row, cosine)`` of the ``count`` best rows scoring ``threshold`` or more.

    Exact (no index): the same answer on every backend, best first.
    """
    if not blobs or count <= 0:
        return []
    import numpy as np  # noqa: PLC0415 - only the services that search load it

    matrix: Matrix = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), -1)
    q = np.asarray(query, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1) * float(np.linalg.norm(q))
    scores = (matrix @ q) / np.where(norms == 0, 1.0, norms)
    k = min(count, len(blobs))
    best = np.argpartition(-scores, k - 1)[:k]
    ranked = best[np.lexsort((best, -scores[best]))]  # score desc, then row order for ties
    return [(int(i), float(scores[i])) for i in ranked if scores[i] >= threshold]
