"""Meta-architectures; importing this package registers them in META_ARCH_REGISTRY."""
