"""The one model object: ``ModelSpec`` (what builds the network) and ``Model`` (spec + variables)
with predict / calculator / export, and ``load_model`` for exported bundles."""

from mfjax.model.model import BaseTerm, Model, check_precision, load_model
from mfjax.model.spec import ModelSpec

__all__ = ["BaseTerm", "Model", "ModelSpec", "check_precision", "load_model"]
