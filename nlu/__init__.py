"""nlu: Spanish chat NLU for customer-service bots that know when to hand over to a person."""

__version__ = "0.1.0"

from .config import Config, RoutingPolicy, TrainConfig, load_config  # noqa: E402
from .data import Dataset, check_data, load_data  # noqa: E402
from .errors import (  # noqa: E402
    ArtifactError,
    ConfigError,
    DataError,
    InputError,
    MessageConflict,
    NLUError,
    OptedOut,
    OutputError,
    QueueError,
    QueueUnavailable,
    StorageUnavailable,
    UnknownTicket,
)
from .model import Model, Prediction, load_model, save_model  # noqa: E402
from .queue import Queue, Ticket, open_queue  # noqa: E402
from .routing import ConversationView, Decision, decide, policy_for  # noqa: E402
from .service import InboundMessage, Outcome, Service  # noqa: E402
from .train import train  # noqa: E402

__all__ = [
    "__version__",
    "ArtifactError",
    "Config",
    "ConfigError",
    "ConversationView",
    "DataError",
    "Dataset",
    "Decision",
    "InboundMessage",
    "InputError",
    "MessageConflict",
    "Model",
    "NLUError",
    "OptedOut",
    "OutputError",
    "Outcome",
    "Prediction",
    "Queue",
    "QueueError",
    "QueueUnavailable",
    "RoutingPolicy",
    "Service",
    "StorageUnavailable",
    "Ticket",
    "TrainConfig",
    "UnknownTicket",
    "check_data",
    "decide",
    "load_config",
    "load_data",
    "load_model",
    "open_queue",
    "policy_for",
    "save_model",
    "train",
]
