"""nlu: Spanish chat NLU for customer-service bots that know when to hand over to a person."""

__version__ = "0.1.0"

from .config import Config, TrainConfig, load_config  # noqa: E402
from .data import Dataset, check_data, load_data  # noqa: E402
from .errors import ArtifactError, ConfigError, DataError, InputError, NLUError  # noqa: E402
from .model import Model, Prediction, load_model, save_model  # noqa: E402
from .train import train  # noqa: E402

__all__ = [
    "__version__",
    "ArtifactError",
    "Config",
    "ConfigError",
    "DataError",
    "Dataset",
    "InputError",
    "Model",
    "NLUError",
    "Prediction",
    "TrainConfig",
    "check_data",
    "load_config",
    "load_data",
    "load_model",
    "save_model",
    "train",
]
