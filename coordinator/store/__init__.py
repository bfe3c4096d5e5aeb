"""Coordinator state stores."""
