"""The `mnist-pipeline` command line (typer): thin shims over the stage functions."""
