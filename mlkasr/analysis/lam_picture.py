"""The LAM picture: the image with the explained window drawn, and the attribution blended over it, side by side.

The heatmap panel shows the image in grey, so that colour means attribution only; the attribution is shown on a
square-root scale (normalised to its maximum), because a raw map is dominated by the few pixels next to the window
and the wider context a network uses would stay invisible.
"""

from __future__ import annotations

import cv2
import numpy as np

from .lam import LamResult

__all__ = ["lam_picture"]

_LABEL_HEIGHT = 28
_GAP = 4
_WINDOW_COLOUR = (255, 40, 40)  # RGB
_HEAT_OPACITY = 0.85  # at the attribution's maximum; none where it is zero


def _label(panel: np.ndarray, text: str) -> np.ndarray:
    band = np.full((_LABEL_HEIGHT, panel.shape[1], 3), 255, dtype=np.uint8)
    cv2.putText(band, text, (4, _LABEL_HEIGHT - 9), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([band, panel], axis=0)


def _draw_window(panel: np.ndarray, result: LamResult, zoom: int) -> np.ndarray:
    w = result.window
    panel = np.ascontiguousarray(panel)
    thickness = max(1, zoom)
    cv2.rectangle(panel, (w.x * zoom, w.y * zoom), ((w.x + w.size) * zoom - 1, (w.y + w.size) * zoom - 1),
                  _WINDOW_COLOUR, thickness)
    return panel


def lam_picture(reference: np.ndarray, result: LamResult, title: str = "", display: int = 256) -> np.ndarray:
    """An RGB uint8 picture of two panels: ``reference`` with the window, and the attribution blended over it.

    ``reference`` is the image at the network output's size (``H x W x 3``, float in [0, 1] or uint8), as
    ``lam_input`` returns it. Panels are enlarged by an integer factor (nearest) to at least ``display`` pixels
    on their longer side, so small crops stay legible. ``title`` starts the first panel's label.
    """
    if reference.dtype != np.uint8:
        reference = (np.clip(reference, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    out_h, out_w = reference.shape[:2]
    scale = result.scale
    lr_h, lr_w = result.attribution.shape
    if (lr_h * scale, lr_w * scale) != (out_h, out_w):
        raise ValueError(f"lam_picture: the reference is {out_w}x{out_h}, the attribution {lr_w}x{lr_h} at x{scale}")
    zoom = max(1, -(-display // max(out_h, out_w)))
    big = cv2.resize(reference, (out_w * zoom, out_h * zoom), interpolation=cv2.INTER_NEAREST)

    heat = np.sqrt(result.normalized)
    heat = np.repeat(np.repeat(heat, scale * zoom, axis=0), scale * zoom, axis=1)
    colours = cv2.applyColorMap((heat * 255.0 + 0.5).astype(np.uint8), cv2.COLORMAP_JET)[:, :, ::-1]
    grey = cv2.cvtColor(big, cv2.COLOR_RGB2GRAY)[:, :, None].repeat(3, axis=2)
    opacity = (heat * _HEAT_OPACITY)[:, :, None]
    blended = (grey * (1.0 - opacity) + colours * opacity + 0.5).astype(np.uint8)

    w = result.window
    first = f"{title + ': ' if title else ''}window {w.size}px at ({w.x}, {w.y})"
    second = f"LAM ({result.objective}, {result.path.steps} steps)  DI {result.diffusion_index:.2f}"
    panels = [_label(_draw_window(big, result, zoom), first), _label(_draw_window(blended, result, zoom), second)]
    gap = np.full((panels[0].shape[0], _GAP, 3), 255, dtype=np.uint8)
    return np.concatenate([panels[0], gap, panels[1]], axis=1)
