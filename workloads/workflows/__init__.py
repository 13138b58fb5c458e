"""Workflows: the durable step engine and the provision / terminate workflows."""
