"""Data stage: where images come from and the one prepared format every dataset is turned into.

datasets     the dataset registry (cifar10, cifar100, imagefolder) and the prepared-data format
cifar        CIFAR-10/100 download, checksum, reader of the official archives, the split
imagefolder  a user's own images (root/<class>/<image>), checked and split with a seed
synthetic    tiny synthetic stand-ins (CIFAR archives, an ImageFolder tree, a feature cache) for tests and CI
"""
