"""Running the pipeline from a deployment on workers: the pull step that checks out its code."""
