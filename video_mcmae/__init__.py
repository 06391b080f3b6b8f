"""VideoConvMAE: masked convolution meets masked autoencoders, for video."""
from . import models  # registers every preset with timm

__version__ = "0.1.0"
