"""Parallel training inside one site: plan choice, worker processes and their launcher."""
