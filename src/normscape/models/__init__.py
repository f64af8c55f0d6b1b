"""What is trained: classifier heads that differ only in their normalisation layer.

norms         the norm registry (builder, label, colour) and the digest of the code a head is built from
frn           Filter Response Normalization + TLU for (N, C) activations
heads         the head: Linear -> Norm -> ReLU -> Dropout -> Linear
stacked_heads the heads of one condition's seeds as one batched model
"""
