"""The training configuration as typed dataclasses: the schema, the defaults and the documentation in one place.

Every field carries a one-line ``help`` in its metadata; the loader (``loader.py``) validates YAML against these
types, so an unknown key or a wrong type fails at load time instead of hours into a run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


def _f(default, help: str, **kwargs):  # noqa: A002 - "help" reads best in the schema
    """A dataclass field with its documentation attached."""
    if isinstance(default, (list, dict)):
        value = default
        return field(default_factory=lambda: type(value)(value), metadata={"help": help}, **kwargs)
    return field(default=default, metadata={"help": help}, **kwargs)


@dataclass
class AblationConfig:
    """The MAN paper's ablations (mirrors ``mlkasr.models.Ablations``); the defaults are the published network."""

    mlka_gate: bool = _f(True, "MLKA multiplies each large-kernel branch by its depthwise gate (X3/X5/X7); false drops the gates")
    mlka_multiscale: bool = _f(
        True,
        "MLKA splits its attention channels into 3 groups of 3 reaches (kernels 3/5/7, dilations 2/3/4); false: one "
        "large kernel (7x7, then 9x9 dilation 4) over all of them",
    )
    feed_forward: Literal["gsau", "mlp"] = _f(
        "gsau", "second unit of each block: gsau (gated spatial attention) or mlp (1x1 n->2n, GELU, 1x1 2n->n)"
    )
    lkat_tail: bool = _f(True, "the residual group ends with the LKAT attention tail; false: the last block's output goes straight to the group's skip")


@dataclass
class ModelConfig:
    name: str = _f("man-tiny", "variant: man-tiny, man-light or man (its width and depth unless n_feats / n_resblocks are set)")
    scale: int = _f(4, "upscaling factor: 2, 3 or 4")
    n_feats: int | None = _f(None, "channels, a multiple of 3 (MLKA splits them into 3 groups); null = the variant's (48 / 60 / 180)")
    n_resblocks: int | None = _f(None, "MAB blocks in the residual group; null = the variant's (5 / 24 / 36)")
    ablations: AblationConfig = field(
        default_factory=AblationConfig, metadata={"help": "switches for the paper's ablations (defaults: the published MAN)"}
    )
    init_weights: str | None = _f(
        None,
        "start a fresh run from these weights (a file or a shipped model name such as man-tiny_x4): tensors of "
        "matching name and shape are copied, the rest (e.g. another scale's upsampler) stay freshly initialised",
    )


_RANGE = "[min, max], drawn uniformly"


@dataclass
class BlurConfig:
    """One stage's blur. Every field null = the preset's value (``data.train.degradation.preset``)."""

    prob: float | None = _f(None, "chance that the stage blurs at all")
    kernel_size: list[int] | None = _f(None, "[min, max] kernel side in pixels; an odd size in the range is drawn")
    kinds: list[Literal["iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso"]] | None = _f(
        None, "kernel kinds to draw from: (generalized/plateau) isotropic or anisotropic Gaussians"
    )
    kind_probs: list[float] | None = _f(None, "probability of each of kinds (same length, sums to 1)")
    sigma: list[float] | None = _f(None, f"Gaussian sigma in pixels of the stage's input, {_RANGE}")
    betag: list[float] | None = _f(None, f"generalized Gaussian shape beta, {_RANGE} (half the draws below 1)")
    betap: list[float] | None = _f(None, f"plateau shape beta, {_RANGE} (half the draws below 1)")
    sinc_prob: float | None = _f(None, "chance of a sinc (ringing) kernel instead of the kinds above")


@dataclass
class ResizeConfig:
    probs: list[float] | None = _f(None, "[up, down, keep] probabilities of the random resize")
    range: list[float] | None = _f(None, "[min, max] resize factor (down draws in [min, 1], up in [1, max])")
    modes: list[Literal["area", "bilinear", "bicubic", "matlab"]] | None = _f(
        None, "interpolations drawn uniformly (matlab = antialiased MATLAB bicubic, the others OpenCV's)"
    )


@dataclass
class NoiseConfig:
    prob: float | None = _f(None, "chance that the stage adds noise at all")
    gaussian_prob: float | None = _f(None, "chance of Gaussian noise; Poisson noise otherwise")
    sigma: list[float] | None = _f(None, f"Gaussian noise sigma on the 0-255 scale, {_RANGE}")
    poisson_scale: list[float] | None = _f(None, f"Poisson noise strength, {_RANGE}")
    gray_prob: float | None = _f(None, "chance that the noise is grey (the same on the three channels)")


@dataclass
class JpegConfig:
    prob: float | None = _f(None, "chance of JPEG compression")
    quality: list[int] | None = _f(None, f"JPEG quality (1-100), {_RANGE}")


@dataclass
class DegradationStageConfig:
    blur: BlurConfig = field(default_factory=BlurConfig, metadata={"help": "blur"})
    resize: ResizeConfig = field(default_factory=ResizeConfig, metadata={"help": "random resize"})
    noise: NoiseConfig = field(default_factory=NoiseConfig, metadata={"help": "Gaussian or Poisson noise"})
    jpeg: JpegConfig = field(default_factory=JpegConfig, metadata={"help": "JPEG (the second stage's: at the end)"})


@dataclass
class DegradationConfig:
    """Real-ESRGAN-style LR synthesis; see mlkasr.data.degradations. Null fields take the preset's values."""

    preset: Literal["realesrgan", "photo"] = _f(
        "realesrgan", "realesrgan = Real-ESRGAN's published second-order parameters; photo = a milder camera model"
    )
    first: DegradationStageConfig = field(default_factory=DegradationStageConfig, metadata={"help": "first stage"})
    second_prob: float | None = _f(None, "chance of the second stage")
    second: DegradationStageConfig = field(default_factory=DegradationStageConfig, metadata={"help": "second stage"})
    final_sinc_prob: float | None = _f(None, "chance of a final sinc filter at the LR size")
    final_resize_modes: list[Literal["area", "bilinear", "bicubic", "matlab"]] | None = _f(
        None, "interpolations of the final resize to the LR size"
    )


@dataclass
class TrainSourceConfig:
    """One of several training sources (e.g. DIV2K and Flickr2K, which make DF2K); hr/lr/degradation as in data.train."""

    hr: str | None = _f(None, "HR images: a folder of images or an LMDB (required)")
    lr: str | None = _f(None, "LR images matching hr (same kind as hr); null = made from HR on the fly")
    weight: float | None = _f(
        None, "share of the draws, relative to the other sources' weights; null (on every source) = by image count"
    )
    degradation: DegradationConfig | None = _f(None, "degrade this source's LR on the fly, e.g. {preset: photo}; needs lr: null")


@dataclass
class TrainDataConfig:
    hr: str | None = _f(None, "HR images: a folder of images (not searched recursively) or an LMDB (a folder holding data.mdb)")
    lr: str | None = _f(None, "LR images matching hr (folder or LMDB, same kind as hr); null = made from HR on the fly (MATLAB bicubic)")
    patch_size: int = _f(64, "LR patch side in pixels (the HR patch is patch_size * scale)")
    num_workers: int = _f(4, "DataLoader worker processes per rank (0 = load in the training process)")
    seed: int = _f(0, "seed of the sample stream: sample i depends only on (seed, i), which makes resume exact")
    cache_images: bool | None = _f(
        None,
        "keep decoded images in memory in every loader process; null = when a folder's images decode to at most "
        "2 GiB (never for LMDBs, whose sub-images decode cheaply)",
    )
    degradation: DegradationConfig | None = _f(
        None,
        "degrade LR on the fly (blur, resize, noise, JPEG) instead of clean bicubic, e.g. {preset: photo}; needs lr: null",
    )
    sources: list[TrainSourceConfig] = _f(
        [],
        "several sources drawn from in one stream, each {hr, lr, weight, degradation} (DF2K = the DIV2K and Flickr2K "
        "LMDBs); instead of hr/lr/degradation",
    )


@dataclass
class ValSetConfig:
    path: str = _f("", "benchmark folder holding HR/ and optionally LR_bicubic/X{scale}/")
    name: str | None = _f(None, "name shown in logs (default: the folder name)")


@dataclass
class DataConfig:
    train: TrainDataConfig = field(default_factory=TrainDataConfig, metadata={"help": "training data"})
    val: list[ValSetConfig] = _f([], "benchmark sets, each {path, name}; best.pth is chosen by train.best_metric on train.best_set")
    val_max_images: int | None = _f(None, "validate on the first N images of each set only (null = all)")


@dataclass
class ScheduleConfig:
    kind: Literal["multistep", "cosine"] = _f("multistep", "learning-rate schedule: multistep or cosine")
    milestones: list[int] = _f([], "multistep: iterations at which the rate is multiplied by gamma")
    gamma: float = _f(0.5, "multistep: factor applied at each milestone")
    warmup_iterations: int = _f(0, "linear warm-up from 0 to train.lr over this many iterations")
    min_lr: float = _f(1e-7, "cosine: the rate at the last iteration")


_VGG_LAYER = "weight of VGG19's {} features (before its ReLU) in the perceptual loss"


@dataclass
class VggLayerWeights:
    """Per-layer weights of the perceptual loss; a layer left out (null) does not count."""

    conv1_1: float | None = _f(None, _VGG_LAYER.format("conv1_1"))
    conv1_2: float | None = _f(None, _VGG_LAYER.format("conv1_2"))
    conv2_1: float | None = _f(None, _VGG_LAYER.format("conv2_1"))
    conv2_2: float | None = _f(None, _VGG_LAYER.format("conv2_2"))
    conv3_1: float | None = _f(None, _VGG_LAYER.format("conv3_1"))
    conv3_2: float | None = _f(None, _VGG_LAYER.format("conv3_2"))
    conv3_3: float | None = _f(None, _VGG_LAYER.format("conv3_3"))
    conv3_4: float | None = _f(None, _VGG_LAYER.format("conv3_4"))
    conv4_1: float | None = _f(None, _VGG_LAYER.format("conv4_1"))
    conv4_2: float | None = _f(None, _VGG_LAYER.format("conv4_2"))
    conv4_3: float | None = _f(None, _VGG_LAYER.format("conv4_3"))
    conv4_4: float | None = _f(None, _VGG_LAYER.format("conv4_4"))
    conv5_1: float | None = _f(None, _VGG_LAYER.format("conv5_1"))
    conv5_2: float | None = _f(None, _VGG_LAYER.format("conv5_2"))
    conv5_3: float | None = _f(None, _VGG_LAYER.format("conv5_3"))
    conv5_4: float | None = _f(None, _VGG_LAYER.format("conv5_4"))


@dataclass
class LossTermConfig:
    """One term of the training objective: ``weight * loss(sr, hr)``; the options below belong to one kind each."""

    kind: Literal["l1", "charbonnier", "perceptual", "gan"] = _f(
        "l1", "l1, charbonnier, perceptual (VGG19 features) or gan (U-Net discriminator, see train.discriminator)"
    )
    weight: float = _f(1.0, "the term's weight in the generator's loss")
    eps: float | None = _f(None, "charbonnier: sqrt((x - y)^2 + eps^2); null = train.charbonnier_eps")
    vgg_weights: str | None = _f(
        None, "perceptual: torchvision's vgg19 state dict (vgg19-dcbb9e9d.pth, downloaded by you; required)"
    )
    layer_weights: VggLayerWeights | None = _f(
        None,
        "perceptual: weight per VGG19 layer, e.g. {conv5_4: 1.0}; null = Real-ESRGAN's (conv1_2 0.1, conv2_2 0.1, "
        "conv3_4 1, conv4_4 1, conv5_4 1)",
    )


@dataclass
class DiscriminatorConfig:
    """The U-Net discriminator with spectral norm (Real-ESRGAN's) that a gan loss term trains alongside."""

    num_feat: int = _f(64, "channels of its first layer (doubled at each of its 3 downsamplings)")
    skip_connection: bool = _f(True, "add the encoder's features to the decoder's at each scale (the U-Net skips)")
    optimizer: Literal["adam", "adamw"] = _f("adam", "adam or adamw")
    lr: float = _f(1e-4, "its peak learning rate")
    betas: list[float] = _f([0.9, 0.99], "its Adam betas")
    weight_decay: float = _f(0.0, "its weight decay (decoupled for adamw)")
    schedule: ScheduleConfig = field(
        default_factory=ScheduleConfig, metadata={"help": "its learning-rate schedule (over train.iterations)"}
    )


@dataclass
class TrainConfig:
    iterations: int = _f(1_600_000, "total optimiser steps")
    batch_size: int = _f(32, "global batch size (split evenly across DDP ranks)")
    accumulate: int = _f(
        1,
        "micro-batches per step: each rank's share of the batch is split into this many, run one after another and "
        "their gradients summed (the same update in less memory); batch_size must divide by it",
    )
    lr: float = _f(5e-4, "peak learning rate")
    optimizer: Literal["adam", "adamw"] = _f("adam", "adam or adamw")
    betas: list[float] = _f([0.9, 0.99], "Adam betas")
    weight_decay: float = _f(0.0, "weight decay (decoupled for adamw)")
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig, metadata={"help": "learning-rate schedule"})
    loss: Literal["l1", "charbonnier"] = _f("l1", "pixel loss: l1 or charbonnier")
    charbonnier_eps: float = _f(1e-3, "charbonnier: sqrt((x - y)^2 + eps^2)")
    losses: list[LossTermConfig] = _f(
        [],
        "weighted loss terms, e.g. [{kind: l1}, {kind: perceptual, vgg_weights: vgg19.pth}, {kind: gan, weight: 0.1}]; "
        "empty = [{kind: <train.loss>, weight: 1}]",
    )
    discriminator: DiscriminatorConfig = field(
        default_factory=DiscriminatorConfig, metadata={"help": "the discriminator of a gan loss term (unused without one)"}
    )
    grad_clip: float | None = _f(None, "clip the global gradient norm to this value (null = no clipping)")
    ema_decay: float = _f(0.999, "EMA decay of the weights used for validation and export (0 = no averaging)")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = _f(
        "auto", "auto = bf16 autocast on CUDA where supported, else fp32; fp16 uses a GradScaler (CUDA only)"
    )
    channels_last: bool | None = _f(None, "null = the measured per-device default (mlkasr.models.runtime)")
    compile: bool | None = _f(
        None, "torch.compile the network (~20-50 s to start); null = the per-device default (mlkasr.models.runtime)"
    )
    save_every: int = _f(5000, "write a checkpoint every N iterations (and at the end)")
    val_every: int = _f(5000, "validate every N iterations (and at the end)")
    keep_last: int = _f(3, "iter_*.pth checkpoints kept (best.pth is kept besides)")
    best_metric: Literal["psnr", "ssim"] = _f("psnr", "what chooses best.pth: psnr or ssim on train.best_set")
    best_set: str | None = _f(None, "the validation set (its name in data.val) that chooses best.pth; null = the first")
    nan_tolerance: int = _f(10, "stop after this many consecutive non-finite steps (each is skipped)")
    seed: int = _f(0, "seed of the network initialisation")


@dataclass
class LoggingConfig:
    log_every: int = _f(100, "write loss / lr / speed to the log and TensorBoard every N iterations")
    tensorboard: bool = _f(True, "write TensorBoard events into RUN_DIR/tensorboard")
    progress_bar: bool = _f(True, "tqdm progress bar on rank 0")
    val_panels: int = _f(1, "image panels (bicubic | SR | HR) logged per validation set")


@dataclass
class Config:
    """A whole training run. ``name`` is the default run folder: runs/NAME."""

    name: str = _f("run", "run name; the run folder defaults to runs/NAME")
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "the network"})
    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "training and validation data"})
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "optimisation"})
    logging: LoggingConfig = field(default_factory=LoggingConfig, metadata={"help": "logs and progress"})
