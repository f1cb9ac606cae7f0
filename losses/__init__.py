"""The objectives' implementations, one file per family; criterion.py is their table.

Every loss is a `losses.base.Objective`: the engine calls its hooks (adapt_model, step_losses,
set_epoch, end_epoch) for every objective alike and never asks which one it is running.
"""
