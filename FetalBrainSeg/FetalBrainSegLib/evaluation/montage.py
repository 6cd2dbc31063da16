"""A PNG montage of slices with the brain mask overlaid, written with zlib alone (no imaging library)."""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np

OVERLAY_RGB = np.array([255, 64, 32], dtype=np.float32)


def write_png(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 image as an 8-bit RGB PNG."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    height, width, _ = rgb.shape
    rows = b"".join(b"\0" + rgb[y].tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows, 6))
        + chunk(b"IEND", b"")
    )
    with open(path, "wb") as handle:
        handle.write(png)


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """A grey slice (windowed at its 1st-99th percentiles) with the mask tinted and outlined."""
    low, high = np.percentile(image, [1, 99])
    grey = np.clip((image - low) / max(high - low, 1e-6), 0, 1) * 255
    rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
    inside = mask > 0
    rgb[inside] = (1 - alpha) * rgb[inside] + alpha * OVERLAY_RGB
    edge = inside & ~(np.roll(inside, 1, 0) & np.roll(inside, -1, 0) & np.roll(inside, 1, 1) & np.roll(inside, -1, 1))
    rgb[edge] = OVERLAY_RGB
    return rgb.astype(np.uint8)


def montage(slices: np.ndarray, masks: np.ndarray, count: int = 12, columns: int = 4) -> np.ndarray:
    """Evenly chosen (n, A, B) slices with their masks, tiled; shown with the first axis horizontal."""
    n = len(slices)
    picks = np.unique(np.linspace(0, n - 1, min(count, n)).round().astype(int))
    tiles = [np.rot90(overlay(slices[i], masks[i])) for i in picks]
    rows = -(-len(tiles) // columns)
    h, w, _ = tiles[0].shape
    canvas = np.zeros((rows * h, columns * w, 3), dtype=np.uint8)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, columns)
        canvas[r * h : (r + 1) * h, c * w : (c + 1) * w] = tile
    return canvas
