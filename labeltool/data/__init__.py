"""Data at the edges: the folder scan and image decoding, the project directory, the SQLite store and its
decision log, the feature cache and the pool of embeddable images."""
