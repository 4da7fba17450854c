"""A local Twilio-compatible server for running and testing the gateway offline.

The sandbox serves the part of Twilio's Programmable Messaging REST API that the
gateway uses, answers with Twilio-shaped JSON, honours Twilio's test-credential
magic numbers and posts signed status callbacks.
"""

from sandbox.app import create_sandbox_app
from sandbox.config import SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN, SandboxConfig
from sandbox.server import SandboxServer, serve, start_in_thread

__all__ = [
    "SANDBOX_ACCOUNT_SID",
    "SANDBOX_AUTH_TOKEN",
    "SandboxConfig",
    "SandboxServer",
    "create_sandbox_app",
    "serve",
    "start_in_thread",
]
