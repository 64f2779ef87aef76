"""Files a user keeps: the dataset and model export, exported-model loading, decisions from a review CSV."""
