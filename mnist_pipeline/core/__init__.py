"""Shared foundations: params, paths, errors, atomic writes, the model's I/O contract."""
