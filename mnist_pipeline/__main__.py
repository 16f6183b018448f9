"""`python -m mnist_pipeline`: the same as the `mnist-pipeline` command (importing it does nothing)."""

from mnist_pipeline.cli import main

if __name__ == "__main__":
    main()
