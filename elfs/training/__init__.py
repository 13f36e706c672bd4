"""How a classifier trains, for every training of the method alike: the proxy whose dynamics score the images, the
β-search candidates and the coreset evaluations (the network and SGD of a ClassifierTrainingConfig, the images'
augmentation, the per-example recorder). Below the stages; knows nothing of the cache or the pipeline."""
