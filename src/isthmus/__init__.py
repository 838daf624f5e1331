"""Isthmus: reach HPC clusters from anywhere.

This module is the SDK that plugin authors and client programs import; everything
else in the package may change between releases.
"""

from .errors import (
    BridgeTimeout,
    BridgeUnreachable,
    ClientError,
    IsthmusError,
    PluginError,
    SessionClosed,
    SessionNotFound,
    TransportError,
)
from .sdk.client import BridgeClient, EdgeClient, PluginClient
from .sdk.deps import get_app_config, get_topology
from .sdk.menu import MenuItem, MenuSection
from .sdk.plugin import Plugin
from .sdk.session import PluginSession
from .types import Principal, Role

__version__ = "0.1.0"

__all__ = [
    "BridgeClient",
    "BridgeTimeout",
    "BridgeUnreachable",
    "ClientError",
    "EdgeClient",
    "IsthmusError",
    "MenuItem",
    "MenuSection",
    "Plugin",
    "PluginClient",
    "PluginError",
    "PluginSession",
    "Principal",
    "Role",
    "SessionClosed",
    "SessionNotFound",
    "TransportError",
    "__version__",
    "get_app_config",
    "get_topology",
]
