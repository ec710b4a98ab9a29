"""Heads; importing this package registers them in their registries."""
