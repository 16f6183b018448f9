"""`python -m mnist_pipeline`: the `mnist-pipeline` command (importing this module does nothing)."""

from mnist_pipeline.cli.app import main

if __name__ == "__main__":
    main()
