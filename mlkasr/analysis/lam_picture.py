"""The LAM picture: the image with the explained window drawn, the attribution blended over it, and that blend
enlarged around the window, side by side.

The heatmap panel shows the image in grey, so that colour means attribution only; the attribution is shown on a
square-root scale (normalised to its maximum), because a raw map is dominated by the few pixels next to the window
and the wider context a network uses would stay invisible.
"""

from __future__ import annotations

import cv2
import numpy as np

from .lam import LamResult, LamWindow

__all__ = ["lam_picture"]

_LABEL_HEIGHT = 28
_GAP = 4
_WINDOW_COLOUR = (255, 40, 40)  # RGB
_HEAT_OPACITY = 0.85  # at the attribution's maximum; none where it is zero


def _label(panel: np.ndarray, text: str) -> np.ndarray:
    band = np.full((_LABEL_HEIGHT, panel.shape[1], 3), 255, dtype=np.uint8)
    cv2.putText(band, text, (4, _LABEL_HEIGHT - 9), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([band, panel], axis=0)


def _draw_window(panel: np.ndarray, window: LamWindow, zoom: int, origin: tuple[int, int] = (0, 0),
                 thickness: int = 1) -> np.ndarray:
    """``panel`` (an output-size image enlarged ``zoom`` times, starting at output pixel ``origin`` = (x, y)) with
    the window's frame drawn in."""
    panel = np.ascontiguousarray(panel)
    left, top = (window.x - origin[0]) * zoom, (window.y - origin[1]) * zoom
    cv2.rectangle(panel, (left, top), (left + window.size * zoom - 1, top + window.size * zoom - 1),
                  _WINDOW_COLOUR, thickness)
    return panel


def _zoom_region(window: LamWindow, height: int, width: int, panel: int) -> tuple[int, int, int, int]:
    """``(x, y, side, zoom)``: the square of output pixels around the window that the third panel enlarges
    ``zoom`` times to fill about ``panel`` pixels (at least 4 window sides, or 32 pixels, of context)."""
    zoom = max(1, panel // min(height, width, max(4 * window.size, 32)))
    side = min(height, width, panel // zoom)
    x = min(max(0, window.x + window.size // 2 - side // 2), width - side)
    y = min(max(0, window.y + window.size // 2 - side // 2), height - side)
    return x, y, side, zoom


def _enlarge(image: np.ndarray, zoom: int) -> np.ndarray:
    return cv2.resize(image, (image.shape[1] * zoom, image.shape[0] * zoom), interpolation=cv2.INTER_NEAREST)


def lam_picture(reference: np.ndarray, result: LamResult, title: str = "", display: int = 256) -> np.ndarray:
    """An RGB uint8 picture of three panels: ``reference`` with the window; the attribution blended over it; and
    the same blend enlarged around the window (most of a network's attribution lies within a few pixels of it).

    ``reference`` is the image at the network output's size (``H x W x 3``, float in [0, 1] or uint8), as
    ``lam_input`` returns it. Panels are enlarged by the largest integer factor (nearest) that keeps their
    longer side within ``display`` pixels, so small crops stay legible. ``title`` starts the first panel's label.
    """
    if reference.dtype != np.uint8:
        reference = (np.clip(reference, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    out_h, out_w = reference.shape[:2]
    scale = result.scale
    lr_h, lr_w = result.attribution.shape
    if (lr_h * scale, lr_w * scale) != (out_h, out_w):
        raise ValueError(f"lam_picture: the reference is {out_w}x{out_h}, the attribution {lr_w}x{lr_h} at x{scale}")
    heat = np.sqrt(result.normalized)
    heat = np.repeat(np.repeat(heat, scale, axis=0), scale, axis=1)
    colours = cv2.applyColorMap((heat * 255.0 + 0.5).astype(np.uint8), cv2.COLORMAP_JET)[:, :, ::-1]
    grey = cv2.cvtColor(reference, cv2.COLOR_RGB2GRAY)[:, :, None].repeat(3, axis=2)
    opacity = (heat * _HEAT_OPACITY)[:, :, None]
    blended = (grey * (1.0 - opacity) + colours * opacity + 0.5).astype(np.uint8)

    window = result.window
    zoom = max(1, display // max(out_h, out_w))
    image_panel = _draw_window(_enlarge(reference, zoom), window, zoom, thickness=max(1, zoom))
    heat_panel = _draw_window(_enlarge(blended, zoom), window, zoom)
    zx, zy, side, close_zoom = _zoom_region(window, out_h, out_w, min(heat_panel.shape[:2]))
    close = _draw_window(_enlarge(blended[zy : zy + side, zx : zx + side], close_zoom), window, close_zoom, (zx, zy))
    close = np.pad(close, ((0, heat_panel.shape[0] - close.shape[0]), (0, 0), (0, 0)), constant_values=255)

    labels = (f"{title + ': ' if title else ''}window {window.size}px at ({window.x}, {window.y})",
              f"LAM ({result.objective}, {result.path.steps} steps)  DI {result.diffusion_index:.2f}",
              f"around the window, enlarged {close_zoom}x")
    panels = [_label(panel, text) for panel, text in zip((image_panel, heat_panel, close), labels)]
    gap = np.full((panels[0].shape[0], _GAP, 3), 255, dtype=np.uint8)
    return np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1)
