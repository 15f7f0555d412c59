"""Packaging for wdl_tf: Wide & Deep Learning for Recommender Systems with Keras 3."""

from setuptools import find_packages, setup

setup(
    name="wdl_tf",
    version="0.1.0",
    description="Wide & Deep Learning (Cheng et al., 2016) with Keras 3 and TensorFlow, "
    "ready for TensorFlow Serving",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["wdl_tf", "wdl_tf.*", "tf_serving", "tf_serving.*"]),
    package_data={"wdl_tf": ["specs/*.json", "datasets/data/*.gz", "datasets/data/*.md"]},
    include_package_data=True,
    install_requires=[
        "tensorflow>=2.16",
        "keras>=3.15",
        "tensorflow-datasets>=4.9",
        "absl-py>=1.0",
        "tensorboard",
        "numpy",
    ],
    extras_require={
        # The serving tests run real gRPC/HTTP servers and clients, and tests/test_tune.py runs
        # real searches, so tests need the serving and tune extras.
        "test": [
            "pytest>=7",
            "pytest-xdist>=3",  # the suite runs on every core (pyproject addopts: -n auto)
            "ruff",
            "tensorflow-serving-api>=2.16",
            "grpcio>=1.24.3",
            "aiohttp>=3.9",
            "prometheus-client>=0.17",
            "keras-tuner[bayesian]>=1.4,<2",
            "matplotlib>=3.5",
        ],
        # The local server's REST front is aiohttp; its metrics use prometheus-client.
        "serving": [
            "tensorflow-serving-api>=2.16",
            "grpcio>=1.24.3",
            "aiohttp>=3.9",
            "prometheus-client>=0.17",
        ],
        # scripts/tune.py; [bayesian] brings scikit-learn for the Gaussian-process oracle.
        "tune": ["keras-tuner[bayesian]>=1.4,<2"],
        # Charts of scripts/importance.py and scripts/report.py.
        "report": ["matplotlib>=3.5"],
    },
    entry_points={
        "console_scripts": [
            "wdl-train=wdl_tf.cli:train_main",
        ],
    },
)
