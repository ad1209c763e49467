"""ImageNet normalisation, done on device so that hosts ship uint8 (4x fewer bytes)."""
import jax.numpy as jnp

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_model_input(images):
  """uint8 NHWC in [0, 255] -> normalised float32; float input is taken as normalised."""
  if images.dtype == jnp.uint8:
    x = images.astype(jnp.float32) / 255.0
    return (x - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)
  return images.astype(jnp.float32)
