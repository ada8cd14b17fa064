"""keras-rigl: dynamic sparse training (RigL) for Keras 3 and tf_keras."""

import setuptools

setuptools.setup(
    name="keras-rigl",
    version="0.1.0",
    description=("Dynamic sparse training with RigL (Evci et al., ICML 2020) for "
                 "Keras 3 and tf_keras on TensorFlow 2"),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    packages=setuptools.find_packages(include=["keras_rigl", "keras_rigl.*"]),
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.16",
        "tf-keras",
        "tensorflow-model-optimization",
        "tensorflow-datasets",
        "absl-py",
        "numpy",
        "matplotlib",
        "tensorboard",
    ],
    extras_require={"dev": ["pytest"]},
)
