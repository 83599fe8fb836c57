"""Install spcl: `pip install -e .` (add `[dev]` for the tests, `[analysis]` for the plots)."""
from setuptools import find_packages, setup

setup(
    name="spcl",
    version="0.1.0",
    description="SPCL: semantic prototype-based contrastive learning for domain adaptive semantic segmentation",
    packages=find_packages(include=["spcl", "spcl.*"]),
    python_requires=">=3.9",
    install_requires=[
        "torch>=2.6",  # torch.load(weights_only=True) with safe_globals of (obj, name) pairs
        "torchvision>=0.21",
        "yacs>=0.1.8",
        "numpy",
        "pillow",
        "tensorboard",
        "tqdm",
        "pyyaml",
    ],
    extras_require={
        # pytest 7.3: tmp_path_retention_policy (pytest.ini); pytest-xdist: the README's test command runs
        # the suite in 2 processes (`-n 2`), since each test uses one torch thread and a 2-core CI machine
        # otherwise leaves a core idle; the plotting packages so that the tests of tools/analyze.py's
        # figures run in CI too (they skip without them)
        "dev": ["pytest>=7.3", "pytest-xdist>=3.0", "matplotlib", "scikit-learn"],
        "analysis": ["matplotlib", "scikit-learn"],
    },
)
