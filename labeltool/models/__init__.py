"""Networks: the backbone registry (bundled weights, timm), projection heads, feature extraction, device choice."""
