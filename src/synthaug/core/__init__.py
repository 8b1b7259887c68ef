"""Plumbing every stage shares: params and their schema, device/precision, atomic storage, MLflow tracking,
processes, lineage of records and pixel-array helpers. Imports nothing else of the package."""
