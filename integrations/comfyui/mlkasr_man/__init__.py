"""ComfyUI custom node: registers the MAN architecture with spandrel, so that the stock "Load Upscale Model" and
"Upscale Image (using Model)" nodes load MAN weights (official .pth files and mlkasr's .safetensors).

It adds no nodes of its own. Needs mlkasr in ComfyUI's Python environment; see README.md beside this file.
"""

try:
    from mlkasr.integrations.spandrel import register
except ImportError as exc:  # say what to install, in ComfyUI's log, instead of a bare traceback
    raise ImportError(f"mlkasr_man needs the mlkasr package in ComfyUI's Python environment "
                      f"(pip install /path/to/mlkasr, a checkout of its repository): {exc}") from exc

register()

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
