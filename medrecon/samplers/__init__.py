"""Diffusion samplers with a 2D prior and ADMM-TV along z: DiffusionMBIR (``mbir``) and DDS (``dds``).

Samplers work in the prior's intensity units (:mod:`medrecon.samplers.intensity`); ADMM weights
follow the relative convention of :mod:`medrecon.samplers.conventions`.

What the samplers share, one idea per module: :mod:`~medrecon.samplers.problem` (the measurement
checked, the data residual), :mod:`~medrecon.samplers.prior_calls` (the prior batch, chunked
network calls), :mod:`~medrecon.samplers.noise` (seeded noise), :mod:`~medrecon.samplers.loop`
(the resumable step loop), :mod:`~medrecon.samplers.resume` (may a saved state be resumed?),
:mod:`~medrecon.samplers.interruption` (SIGINT/SIGTERM), :mod:`~medrecon.samplers.timing` and
:mod:`~medrecon.samplers.state` (the state store the caller hands over: samplers open no files).
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
