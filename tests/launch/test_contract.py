"""Runs the launcher contract (tests/launch/contract.py) over every launcher."""

from tests.launch.contract import *  # noqa: F401,F403 - the contract's tests, collected here
