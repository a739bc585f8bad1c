"""Diffusion samplers with a 2D prior and ADMM-TV along z: DiffusionMBIR (``mbir``) and DDS (``dds``).

Samplers work in the prior's intensity units (:mod:`medrecon.samplers.intensity`); ADMM weights
follow the relative convention of :mod:`medrecon.samplers.conventions`.
"""

from medrecon.samplers.config import (TASKS, DdsConfig, MbirConfig, config_for_task,
                                      load_config)
from medrecon.samplers.dds import dds
from medrecon.samplers.interruption import SamplingInterrupted
from medrecon.samplers.loop import RunOptions, SampleResult
from medrecon.samplers.mbir import mbir
from medrecon.samplers.posterior import PosteriorResult, sample_posterior
from medrecon.samplers.run import Reconstruction, reconstruct

__all__ = ["dds", "mbir", "sample_posterior", "PosteriorResult", "SampleResult", "RunOptions",
           "SamplingInterrupted", "DdsConfig", "MbirConfig", "config_for_task", "load_config",
           "TASKS", "reconstruct", "Reconstruction"]
