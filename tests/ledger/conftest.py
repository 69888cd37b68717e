"""The gateway fixtures, for the ledger tests that run one."""

from ..gateway.conftest import gateway_factory  # noqa: F401
