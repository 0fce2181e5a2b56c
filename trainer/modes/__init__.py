"""The modes beside training: eval, predict, export and the model summary, all from a saved checkpoint
(inference.py) or from the model config alone (model_summary.py)."""
