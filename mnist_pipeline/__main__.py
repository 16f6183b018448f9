"""`python -m mnist_pipeline`: the same as the `mnist-pipeline` command."""

from mnist_pipeline.cli import main

main()
