"""ie-jax: Internet Explorer (Li et al., ICML 2023) in JAX/Flax."""

import logging as _logging

# Our progress messages at INFO, whatever verbosity absl sets for library chatter (Orbax
# logs every file it renames at INFO).
_logging.getLogger('ie_jax').setLevel(_logging.INFO)
