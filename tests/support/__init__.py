"""Shared test helpers: one ``free_port`` (the library's), imported from here by every test."""

from benchflow.launch.process import free_port

__all__ = ["free_port"]
