"""A simulated QuickBooks Online (OAuth, Query, CDC, read, batch, webhooks) for tests, the demo."""

from .command import add_arguments, run_command
from .company import ChangeRecord
from .options import SandboxOptions
from .server import Sandbox
from .webhooks import RETRY_SCHEDULE, sign

__all__ = [
    "RETRY_SCHEDULE",
    "ChangeRecord",
    "Sandbox",
    "SandboxOptions",
    "add_arguments",
    "run_command",
    "sign",
]
