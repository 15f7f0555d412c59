"""wdl_tf: Wide & Deep Learning for Recommender Systems (Cheng et al., 2016) with Keras 3."""

__version__ = "0.1.0"
