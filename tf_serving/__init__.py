"""TF-Serving-compatible local serving for development and tests (see `tf_serving.server`)."""
