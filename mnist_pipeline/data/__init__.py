"""MNIST on disk: download and verify, IDX files, the dataset, preprocessing, augmentation."""
