"""Pectus: process control for unit operations - P-code methods, engines, an auditable record."""

__version__ = "0.1.0"
