"""VideoConvMAE: masked convolution meets masked autoencoders, for video."""
__version__ = "0.1.0"
