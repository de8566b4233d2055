"""Hydra plugin of the reparam package: the `hydra/launcher=slurm` launcher (Hydra only loads launcher classes
from the `hydra_plugins` namespace). The config is registered by reparam/study_config.py."""
