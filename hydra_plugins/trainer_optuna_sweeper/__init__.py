"""`hparams_search=optuna`: the trainer's own Hydra sweeper on Optuna's ask-and-tell API (Optuna >= 4).

Hydra finds it by importing every module of the `hydra_plugins` namespace package: `config` registers
`hydra/sweeper=optuna` (and its samplers) in the ConfigStore, `optuna_sweeper` holds the Sweeper. Both import
only Hydra; Optuna is imported by `_search` when a search starts.
"""
