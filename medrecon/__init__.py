"""medrecon: 3D medical image reconstruction with 2D diffusion priors."""

__version__ = "0.1.0"
