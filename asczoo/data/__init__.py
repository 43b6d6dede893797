"""Audio, data checks, clip datasets, the frontend, the feature cache, synthetic data, augmentation."""
