"""Typed training configuration: the schema (dataclasses) and its strict YAML loader."""

from .loader import ConfigError, check_config, config_from_dict, describe_schema, dump_config, load_config, parse_override
from .schema import (
    AblationConfig,
    Config,
    DataConfig,
    DiscriminatorConfig,
    LoggingConfig,
    LossTermConfig,
    ModelConfig,
    ScheduleConfig,
    TrainConfig,
    TrainDataConfig,
    TrainSourceConfig,
    ValSetConfig,
    VggLayerWeights,
)

__all__ = [
    "AblationConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "DiscriminatorConfig",
    "LoggingConfig",
    "LossTermConfig",
    "ModelConfig",
    "ScheduleConfig",
    "TrainConfig",
    "TrainDataConfig",
    "TrainSourceConfig",
    "ValSetConfig",
    "VggLayerWeights",
    "check_config",
    "config_from_dict",
    "describe_schema",
    "dump_config",
    "load_config",
    "parse_override",
]
