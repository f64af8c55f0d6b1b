"""Feature stage: every split of the prepared dataset through a frozen backbone into one HDF5 cache.

backbones     the backbone registry: any torchvision classifier as a frozen feature extractor
extract       feature extraction (the whole dataset, or one shard of its rows)
store         the HDF5 feature cache: format, writer, readers, attributes
merge_shards  merging the shards of a sharded extraction into exactly the unsharded file
linear_probe  how much a cache knows: test accuracy of a logistic regression (python -m normscape.features.linear_probe)
"""
