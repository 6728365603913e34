"""Typed training configuration: the schema (dataclasses) and its strict YAML loader."""

from .loader import ConfigError, config_from_dict, describe_schema, dump_config, load_config, parse_override
from .schema import (
    AblationConfig,
    Config,
    DataConfig,
    LoggingConfig,
    ModelConfig,
    ScheduleConfig,
    TrainConfig,
    TrainDataConfig,
    ValSetConfig,
)

__all__ = [
    "AblationConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "LoggingConfig",
    "ModelConfig",
    "ScheduleConfig",
    "TrainConfig",
    "TrainDataConfig",
    "ValSetConfig",
    "config_from_dict",
    "describe_schema",
    "dump_config",
    "load_config",
    "parse_override",
]
